#include "attack/pgd.h"

#include <torch/torch.h>

#include "attack/fgsm.h"
#include "core/error.h"

namespace bulwark::attack {

PgdOptions& PgdOptions::steps(int64_t v) {
  if (v < 1 || v > 100000) throw invalid_argument("--steps must be in 1..100000, got " + std::to_string(v));
  steps_ = v;
  return *this;
}
PgdOptions& PgdOptions::step_size(double v) {
  check_range("--step-size", v, 0, 1e6);
  step_size_ = v;
  return *this;
}
PgdOptions& PgdOptions::random_start(bool v) {
  random_start_ = v;
  return *this;
}
PgdOptions& PgdOptions::restarts(int64_t v) {
  if (v < 1 || v > 1000) throw invalid_argument("--restarts must be in 1..1000, got " + std::to_string(v));
  restarts_ = v;
  return *this;
}
PgdOptions& PgdOptions::loss(Loss v) {
  loss_ = v;
  return *this;
}
PgdOptions& PgdOptions::early_stop(bool v) {
  early_stop_ = v;
  return *this;
}

nlohmann::json PgdOptions::to_json() const {
  auto j = threat_json();
  j["attack"] = "pgd";
  j["steps"] = steps_;
  j["step_size"] = step_size_;
  j["random_start"] = random_start_;
  j["restarts"] = restarts_;
  j["loss"] = to_string(loss_);
  return j;
}

torch::Tensor Pgd::perturb(const LogitsFn& f, const torch::Tensor& x, const torch::Tensor& y) {
  cost_ = {};
  auto gen = make_generator(options_.seed());
  torch::Tensor adv = x.clone();
  torch::Tensor fooled = torch::zeros({x.size(0)}, torch::kBool);
  for (int64_t r = 0; r < options_.restarts(); ++r) {
    // Later restarts only attack the points that are still standing.
    const auto idx = r == 0 ? torch::arange(x.size(0)) : (~fooled).nonzero().squeeze(1);
    if (idx.numel() == 0) break;
    torch::Tensor sub_fooled;
    const auto sub_adv = run_once(f, x.index_select(0, idx), y.index_select(0, idx), gen, sub_fooled);
    if (r == 0) {
      adv = sub_adv;
    } else {
      const auto hits = sub_fooled.nonzero().squeeze(1);
      adv.index_copy_(0, idx.index_select(0, hits), sub_adv.index_select(0, hits));
    }
    fooled.index_put_({idx}, fooled.index_select(0, idx).logical_or(sub_fooled));
  }
  return adv;
}

torch::Tensor Pgd::run_once(const LogitsFn& f, const torch::Tensor& x, const torch::Tensor& y, torch::Generator& gen,
                            torch::Tensor& fooled) {
  const Threat& t = threat();
  const int64_t n = x.size(0);
  const bool early = options_.early_stop();
  fooled = torch::zeros({n}, torch::kBool);
  torch::Tensor cur = options_.random_start() ? t.random_start(x, gen) : x.clone();
  torch::Tensor result = cur.clone();
  // Compact views of the points still being attacked.
  torch::Tensor idx = torch::arange(n), xo = x, yy = y;
  const Loss loss = options_.loss();

  auto retire = [&](const torch::Tensor& hit) {
    const auto hit_idx = hit.nonzero().squeeze(1);
    const auto where = idx.index_select(0, hit_idx);
    result.index_copy_(0, where, cur.index_select(0, hit_idx));
    fooled.index_fill_(0, where, true);
    const auto keep = hit.logical_not().nonzero().squeeze(1);
    idx = idx.index_select(0, keep);
    xo = xo.index_select(0, keep);
    yy = yy.index_select(0, keep);
    cur = cur.index_select(0, keep);
    return keep;
  };

  for (int64_t step = 0; step < options_.steps(); ++step) {
    report_progress(static_cast<double>(step) / static_cast<double>(options_.steps()));
    auto g = input_gradient(
        f, cur,
        [&](const torch::Tensor& z, int64_t s, int64_t len) { return per_sample_loss(loss, z, yy.narrow(0, s, len)); },
        options_.batch_size());
    cost_.gradient_passes += cur.size(0);
    torch::NoGradGuard no_grad;
    if (early) {
      const auto hit = confirmed_misclassified(f, cur, yy, g.logits, options_.batch_size(), cost_);
      if (hit.any().item<bool>()) {
        const auto keep = retire(hit);
        g.grad = g.grad.index_select(0, keep);
        if (idx.numel() == 0) return result;
      }
    }
    cur = t.project(steepest_direction(g.grad, t.norm).mul_(options_.step_size()).add_(cur), xo);
  }
  torch::NoGradGuard no_grad;
  if (early && idx.numel() > 0) {
    // The last iterate has not been checked yet.
    const auto hit = forward_chunked(f, cur, options_.batch_size()).argmax(1).ne(yy);
    cost_.forward_passes += cur.size(0);
    fooled.index_put_({idx}, hit);
  }
  result.index_copy_(0, idx, cur);
  return result;
}

}  // namespace bulwark::attack
