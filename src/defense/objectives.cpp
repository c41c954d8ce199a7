#include "defense/objectives.h"

#include <torch/torch.h>

#include <algorithm>
#include <functional>

#include "attack/base.h"
#include "attack/fgsm.h"  // steepest_direction
#include "attack/losses.h"

namespace bulwark::defense {
namespace {

uint64_t step_seed(uint64_t seed, const train::StepContext& ctx) {
  return seed * 1000003ULL + static_cast<uint64_t>(ctx.epoch) * 100003ULL + static_cast<uint64_t>(ctx.step);
}

attack::Threat at_eps(const attack::Threat& t, double eps) {
  attack::Threat out = t;
  out.eps = eps;
  return out;
}

torch::Tensor ce(const torch::Tensor& logits, const torch::Tensor& y) {
  return torch::nn::functional::cross_entropy(logits, y);
}

// Inner maximisation runs with frozen parameters (only the input needs a gradient) and in eval mode
// (BatchNorm on its running statistics, left alone); the training step then runs in the mode the
// model was in (train mode under train::fit).
struct AttackScope {
  explicit AttackScope(model::Model& m) : frozen_(m), eval_(m) {}
  model::FrozenParameters frozen_;
  model::EvalMode eval_;
};

// This rank's rows of a random draw made for the whole global batch: a data-parallel rank starts
// its inner maximisation exactly where one process would for the same samples. `draw` gets a
// batch shaped like the global one whose rows [shard_offset, +x.size(0)) are x and the rest zero;
// the draws and projections used here treat rows independently, so the others are never read.
torch::Tensor rows_of_global_draw(const torch::Tensor& x, const train::StepContext& ctx,
                                  const std::function<torch::Tensor(const torch::Tensor&)>& draw) {
  if (ctx.global_batch == 0 || (ctx.shard_offset == 0 && ctx.global_batch == x.size(0))) return draw(x);
  auto sizes = x.sizes().vec();
  sizes[0] = ctx.global_batch;
  auto full = torch::zeros(sizes, x.options());
  full.narrow(0, ctx.shard_offset, x.size(0)).copy_(x);
  return draw(full).narrow(0, ctx.shard_offset, x.size(0));
}

attack::ChunkLoss ce_of(const torch::Tensor& y) {
  return [&y](const torch::Tensor& z, int64_t s, int64_t len) { return attack::ce_loss(z, y.narrow(0, s, len)); };
}

// The training-time attacks, over attack's primitives rather than attack::Pgd / attack::Fgsm so
// the random start can come from rows_of_global_draw; with one process they take exactly the
// steps Pgd (random start, no early stop, one restart) and Fgsm take.
torch::Tensor pgd_points(model::Model& m, const attack::Threat& t, const torch::Tensor& x, const torch::Tensor& y,
                         int64_t steps, double step_size, uint64_t seed, attack::Precision precision,
                         const train::StepContext& ctx) {
  if (t.eps <= 0) return x;
  AttackScope scope(m);
  auto gen = attack::make_generator(seed);
  auto cur = rows_of_global_draw(x, ctx, [&](const torch::Tensor& full) { return t.random_start(full, gen); });
  const auto f = attack::logits_of(m, precision);
  const int64_t chunk = std::max<int64_t>(x.size(0), 1);
  for (int64_t k = 0; k < steps; ++k) {
    const auto g = attack::input_gradient(f, cur, ce_of(y), chunk);
    torch::NoGradGuard no_grad;
    cur = t.project(attack::steepest_direction(g.grad, t.norm).mul_(step_size).add_(cur), x);
  }
  return cur.detach();
}

torch::Tensor fgsm_points(model::Model& m, const attack::Threat& t, const torch::Tensor& x, const torch::Tensor& y,
                          double step_size, bool random_init, uint64_t seed, attack::Precision precision,
                          const train::StepContext& ctx) {
  AttackScope scope(m);
  torch::Tensor start = x;
  if (random_init) {
    auto gen = attack::make_generator(seed);
    start = rows_of_global_draw(x, ctx, [&](const torch::Tensor& full) { return t.random_start(full, gen); });
  }
  const auto g =
      attack::input_gradient(attack::logits_of(m, precision), start, ce_of(y), std::max<int64_t>(x.size(0), 1));
  torch::NoGradGuard no_grad;
  return t.project(start + step_size * attack::steepest_direction(g.grad, t.norm), x).detach();
}

}  // namespace

double AdversarialSettings::eps_at(const train::StepContext& ctx) const {
  if (warmup_epochs <= 0) return threat.eps;
  const double progress =
      (static_cast<double>(ctx.epoch) + static_cast<double>(ctx.step) / std::max<int64_t>(ctx.steps_per_epoch, 1)) /
      warmup_epochs;
  return threat.eps * std::min(1.0, progress);
}

PgdAtObjective::PgdAtObjective(AdversarialSettings s, int64_t steps, double step_ratio, double clean_weight)
    : s_(std::move(s)), steps_(steps), step_ratio_(step_ratio), clean_weight_(clean_weight) {}

train::StepOutput PgdAtObjective::step(model::Model& m, const torch::Tensor& x, const torch::Tensor& y,
                                       const train::StepContext& ctx) {
  const double eps = s_.eps_at(ctx);
  const auto x_adv =
      pgd_points(m, at_eps(s_.threat, eps), x, y, steps_, step_ratio_ * eps, step_seed(s_.seed, ctx), s_.precision, ctx);
  auto logits = m.logits(x_adv);
  auto loss = ce(logits, y);
  if (clean_weight_ > 0) loss = (1 - clean_weight_) * loss + clean_weight_ * ce(m.logits(x), y);
  return {loss, logits};
}

nlohmann::json PgdAtObjective::to_json() const {
  return {{"method", "pgd-at"},          {"eps", s_.threat.eps},         {"norm", attack::to_string(s_.threat.norm)},
          {"steps", steps_},            {"step_size_over_eps", step_ratio_}, {"clean_weight", clean_weight_},
          {"warmup_epochs", s_.warmup_epochs}};
}

TradesObjective::TradesObjective(AdversarialSettings s, double beta, int64_t steps, double step_ratio)
    : s_(std::move(s)), beta_(beta), steps_(steps), step_ratio_(step_ratio) {}

train::StepOutput TradesObjective::step(model::Model& m, const torch::Tensor& x, const torch::Tensor& y,
                                        const train::StepContext& ctx) {
  const double eps = s_.eps_at(ctx);
  const attack::Threat t = at_eps(s_.threat, eps);
  auto logits_clean = m.logits(x);
  const auto loss_ce = ce(logits_clean, y);
  if (beta_ == 0 || eps <= 0) return {loss_ce, logits_clean};
  // Inner maximisation of KL(f(x) || f(x')) from a small Gaussian start (the paper's 0.001).
  torch::Tensor x_adv;
  {
    AttackScope scope(m);
    torch::NoGradGuard no_grad;
    const auto p_clean = torch::softmax(m.logits(x), 1);
    auto gen = attack::make_generator(step_seed(s_.seed, ctx));
    x_adv = t.project(
        x + 0.001 * rows_of_global_draw(x, ctx, [&](const torch::Tensor& full) { return torch::randn(full.sizes(), gen); }),
        x);
    for (int64_t k = 0; k < steps_; ++k) {
      const auto g = attack::input_gradient(
          attack::logits_of(m, s_.precision), x_adv,
          [&](const torch::Tensor& z, int64_t s, int64_t len) {
            return torch::kl_div(torch::log_softmax(z, 1), p_clean.narrow(0, s, len), at::Reduction::None).sum(1);
          },
          std::max<int64_t>(x.size(0), 1));
      x_adv = t.project(x_adv + step_ratio_ * eps * attack::steepest_direction(g.grad, t.norm), x);
    }
  }
  const auto logits_adv = m.logits(x_adv);
  const auto kl = torch::kl_div(torch::log_softmax(logits_adv, 1), torch::softmax(logits_clean, 1),
                                at::Reduction::Sum) /
                  static_cast<double>(x.size(0));
  return {loss_ce + beta_ * kl, logits_adv};
}

nlohmann::json TradesObjective::to_json() const {
  return {{"method", "trades"}, {"eps", s_.threat.eps}, {"norm", attack::to_string(s_.threat.norm)},
          {"beta", beta_},      {"steps", steps_},      {"step_size_over_eps", step_ratio_},
          {"warmup_epochs", s_.warmup_epochs}};
}

FastAtObjective::FastAtObjective(AdversarialSettings s, double alpha_ratio, bool random_init, double clean_weight)
    : s_(std::move(s)), alpha_ratio_(alpha_ratio), random_init_(random_init), clean_weight_(clean_weight) {}

void FastAtObjective::fall_back() { fell_back_ = true; }

std::vector<double> FastAtObjective::shared_state() const { return {fell_back_ ? 1.0 : 0.0}; }

void FastAtObjective::set_shared_state(const std::vector<double>& state) {
  if (!state.empty()) fell_back_ = state[0] > 0;
}

train::StepOutput FastAtObjective::step(model::Model& m, const torch::Tensor& x, const torch::Tensor& y,
                                        const train::StepContext& ctx) {
  const double eps = s_.eps_at(ctx);
  const attack::Threat t = at_eps(s_.threat, eps);
  torch::Tensor x_adv;
  if (fell_back_) {
    x_adv = pgd_points(m, t, x, y, 2, 0.5 * eps, step_seed(s_.seed, ctx), s_.precision, ctx);
  } else if (eps <= 0) {
    x_adv = x;
  } else {
    x_adv = fgsm_points(m, t, x, y, alpha_ratio_ * eps, random_init_, step_seed(s_.seed, ctx), s_.precision, ctx);
  }
  auto logits = m.logits(x_adv);
  auto loss = ce(logits, y);
  if (clean_weight_ > 0) loss = (1 - clean_weight_) * loss + clean_weight_ * ce(m.logits(x), y);
  return {loss, logits};
}

nlohmann::json FastAtObjective::to_json() const {
  return {{"method", "fast-at"},       {"eps", s_.threat.eps},        {"norm", attack::to_string(s_.threat.norm)},
          {"alpha_over_eps", alpha_ratio_}, {"random_init", random_init_}, {"clean_weight", clean_weight_},
          {"fell_back_to_pgd2", fell_back_},
          {"warmup_epochs", s_.warmup_epochs}};
}

}  // namespace bulwark::defense
