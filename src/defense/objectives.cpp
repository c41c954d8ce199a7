#include "defense/objectives.h"

#include <torch/torch.h>

#include <algorithm>

#include "attack/base.h"
#include "attack/fgsm.h"
#include "attack/pgd.h"

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

torch::Tensor pgd_points(model::Model& m, const attack::Threat& t, const torch::Tensor& x, const torch::Tensor& y,
                         int64_t steps, double step_size, uint64_t seed) {
  if (t.eps <= 0) return x;
  AttackScope scope(m);
  attack::Pgd pgd(attack::PgdOptions(t.eps)
                      .norm(t.norm)
                      .range(t.lo, t.hi)
                      .steps(steps)
                      .step_size(step_size)
                      .early_stop(false)
                      .seed(seed)
                      .batch_size(std::max<int64_t>(x.size(0), 1)));
  return pgd.perturb(attack::logits_of(m), x, y).detach();
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
  const auto x_adv = pgd_points(m, at_eps(s_.threat, eps), x, y, steps_, step_ratio_ * eps, step_seed(s_.seed, ctx));
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
    x_adv = t.project(x + 0.001 * torch::randn(x.sizes(), gen), x);
    for (int64_t k = 0; k < steps_; ++k) {
      const auto g = attack::input_gradient(
          attack::logits_of(m), x_adv,
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

train::StepOutput FastAtObjective::step(model::Model& m, const torch::Tensor& x, const torch::Tensor& y,
                                        const train::StepContext& ctx) {
  const double eps = s_.eps_at(ctx);
  const attack::Threat t = at_eps(s_.threat, eps);
  torch::Tensor x_adv;
  if (fell_back_) {
    x_adv = pgd_points(m, t, x, y, 2, 0.5 * eps, step_seed(s_.seed, ctx));
  } else if (eps <= 0) {
    x_adv = x;
  } else {
    AttackScope scope(m);
    attack::Fgsm fgsm(attack::FgsmOptions(eps)
                          .norm(t.norm)
                          .range(t.lo, t.hi)
                          .random_start(random_init_)
                          .step_size(alpha_ratio_ * eps)
                          .seed(step_seed(s_.seed, ctx))
                          .batch_size(std::max<int64_t>(x.size(0), 1)));
    x_adv = fgsm.perturb(attack::logits_of(m), x, y).detach();
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
