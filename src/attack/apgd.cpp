#include "attack/apgd.h"

#include <torch/torch.h>

#include <algorithm>

#include "attack/fgsm.h"
#include "core/error.h"

namespace bulwark::attack {
namespace {

struct Schedule {
  int64_t first;     // n_iter_2: iterations before the first check
  int64_t min_gap;   // n_iter_min
  int64_t decrease;  // size_decr
};

Schedule schedule_for(int64_t n_iter) {
  // int() truncation as in the reference (0.22 * 100 == 22.000000000000004 -> 22).
  return {std::max<int64_t>(static_cast<int64_t>(0.22 * static_cast<double>(n_iter)), 1),
          std::max<int64_t>(static_cast<int64_t>(0.06 * static_cast<double>(n_iter)), 1),
          std::max<int64_t>(static_cast<int64_t>(0.03 * static_cast<double>(n_iter)), 1)};
}

// Reference check_oscillation: counts increases of the loss over the last k steps; Python's
// negative index at j - c - 1 == -1 reads the last row (still zero then), kept for fidelity.
torch::Tensor oscillation(const torch::Tensor& loss_steps, int64_t j, int64_t k, double rho) {
  const int64_t rows = loss_steps.size(0);
  auto t = torch::zeros({loss_steps.size(1)});
  for (int64_t c = 0; c < k; ++c) {
    const int64_t a = j - c, b = j - c - 1;
    t += loss_steps[(a + rows) % rows].gt(loss_steps[(b + rows) % rows]).to(torch::kFloat);
  }
  return t.le(static_cast<double>(k) * rho).to(torch::kFloat);
}

}  // namespace

std::vector<int64_t> apgd_checkpoints(int64_t n_iter) {
  const Schedule s = schedule_for(n_iter);
  std::vector<int64_t> out;
  int64_t k = s.first, counter = 0;
  for (int64_t i = 0; i < n_iter; ++i) {
    if (++counter == k) {
      out.push_back(i + 1);
      k = std::max(k - s.decrease, s.min_gap);
      counter = 0;
    }
  }
  return out;
}

ApgdOptions& ApgdOptions::steps(int64_t v) {
  if (v < 1 || v > 100000) throw invalid_argument("--steps must be in 1..100000, got " + std::to_string(v));
  steps_ = v;
  return *this;
}
ApgdOptions& ApgdOptions::restarts(int64_t v) {
  if (v < 1 || v > 1000) throw invalid_argument("--restarts must be in 1..1000, got " + std::to_string(v));
  restarts_ = v;
  return *this;
}
ApgdOptions& ApgdOptions::loss(Loss v) {
  loss_ = v;
  return *this;
}
ApgdOptions& ApgdOptions::rho(double v) {
  check_range("--rho", v, 0, 1);
  rho_ = v;
  return *this;
}
ApgdOptions& ApgdOptions::targeted(bool v) {
  targeted_ = v;
  return *this;
}
ApgdOptions& ApgdOptions::target_classes(int64_t v) {
  if (v < 1 || v > 1000) throw invalid_argument("--target-classes must be in 1..1000, got " + std::to_string(v));
  target_classes_ = v;
  return *this;
}

nlohmann::json ApgdOptions::to_json() const {
  auto j = threat_json();
  j["attack"] = targeted_ ? "apgd-t" : (loss_ == Loss::kDlr ? "apgd-dlr" : "apgd-ce");
  j["steps"] = steps_;
  j["restarts"] = restarts_;
  j["loss"] = targeted_ ? "dlr-targeted" : to_string(loss_);
  j["rho"] = rho_;
  if (targeted_) j["target_classes"] = target_classes_;
  return j;
}

std::string Apgd::name() const {
  return options_.targeted() ? "apgd-t" : (options_.loss() == Loss::kDlr ? "apgd-dlr" : "apgd-ce");
}

Apgd::RunResult Apgd::single_run(const LogitsFn& f, const torch::Tensor& x_in, const torch::Tensor& y_in,
                                 const torch::Tensor& target_in, torch::Generator& gen) {
  const Threat& t = threat();
  const int64_t n = x_in.size(0), n_iter = options_.steps();
  const bool targeted = target_in.defined();
  const Loss loss_kind = options_.loss();
  torch::Tensor x = x_in, y = y_in, target = target_in;
  auto loss_of = [&](const torch::Tensor& z, int64_t s, int64_t len) {
    const auto ys = y.narrow(0, s, len);
    return targeted ? dlr_targeted_loss(z, ys, target.narrow(0, s, len)) : per_sample_loss(loss_kind, z, ys);
  };
  const int64_t chunk = options_.batch_size();

  RunResult out{torch::zeros({n}, torch::kBool), x_in.clone()};
  torch::Tensor x_adv;
  {
    torch::NoGradGuard no_grad;
    const auto u = t.norm == Norm::kLinf ? 2 * torch::rand(x.sizes(), gen) - 1 : torch::randn(x.sizes(), gen);
    const auto dir = t.norm == Norm::kLinf
                         ? u / (u.flatten(1).abs().amax(1).view({-1, 1, 1, 1}) + 1e-12)
                         : l2_normalize(u);
    x_adv = (x + t.eps * dir).clamp(t.lo, t.hi);
  }
  auto g = input_gradient(f, x_adv, loss_of, chunk);
  cost_.gradient_passes += n;
  torch::NoGradGuard no_grad;
  torch::Tensor grad = g.grad, cur_loss = g.loss;
  torch::Tensor grad_best = grad.clone(), x_best = x_adv.clone(), x_adv_old = x_adv.clone();
  torch::Tensor loss_best = cur_loss.clone(), loss_best_last_check = loss_best.clone();
  torch::Tensor reduced_last_check = torch::ones({n});
  torch::Tensor loss_steps = torch::zeros({n_iter, n});
  torch::Tensor step_size = torch::full({n, 1, 1, 1}, 2.0 * t.eps);
  torch::Tensor idx = torch::arange(n);  // original positions of the points still standing

  // Records the evaluated iterate of newly misclassified points (the reference's x_best_adv)
  // and drops them from every per-sample state. Returns false when no point is left.
  auto retire = [&](const torch::Tensor& logits) {
    const auto wrong = confirmed_misclassified(f, x_adv, y, logits, chunk, cost_);
    if (!wrong.any().item<bool>()) return true;
    const auto hit = wrong.nonzero().squeeze(1);
    const auto where = idx.index_select(0, hit);
    out.fooled.index_fill_(0, where, true);
    out.adv.index_copy_(0, where, x_adv.index_select(0, hit));
    const auto keep = wrong.logical_not().nonzero().squeeze(1);
    for (torch::Tensor* s : {&x, &y, &x_adv, &x_adv_old, &x_best, &grad, &grad_best, &cur_loss, &loss_best,
                             &loss_best_last_check, &reduced_last_check, &step_size, &idx}) {
      *s = s->index_select(0, keep);
    }
    if (targeted) target = target.index_select(0, keep);
    loss_steps = loss_steps.index_select(1, keep);
    return keep.numel() > 0;
  };
  if (!retire(g.logits)) return out;

  const Schedule sched = schedule_for(n_iter);
  int64_t k = sched.first, counter3 = 0;
  for (int64_t i = 0; i < n_iter; ++i) {
    report_progress(static_cast<double>(run_index_ * n_iter + i) / static_cast<double>(runs_ * n_iter));
    const auto grad2 = x_adv - x_adv_old;
    x_adv_old = x_adv;
    const double a = i > 0 ? 0.75 : 1.0;
    const auto x1 = t.project(x_adv + step_size * steepest_direction(grad, t.norm), x);
    x_adv = t.project(x_adv + (x1 - x_adv) * a + grad2 * (1 - a), x);

    g = input_gradient(f, x_adv, loss_of, chunk);
    cost_.gradient_passes += x_adv.size(0);
    grad = g.grad;
    cur_loss = g.loss;
    if (!retire(g.logits)) return out;

    loss_steps[i] = cur_loss;
    const auto improved = cur_loss.gt(loss_best);
    const auto improved4 = improved.view({-1, 1, 1, 1});
    x_best = torch::where(improved4, x_adv, x_best);
    grad_best = torch::where(improved4, grad, grad_best);
    loss_best = torch::where(improved, cur_loss, loss_best);

    if (++counter3 == k) {
      auto fl = oscillation(loss_steps, i, k, options_.rho());
      const auto no_improvement = (1 - reduced_last_check) * loss_best_last_check.ge(loss_best).to(torch::kFloat);
      fl = torch::max(fl, no_improvement);
      reduced_last_check = fl.clone();
      loss_best_last_check = loss_best.clone();
      const auto halve4 = fl.gt(0).view({-1, 1, 1, 1});
      step_size = torch::where(halve4, step_size / 2.0, step_size);
      x_adv = torch::where(halve4, x_best, x_adv);
      grad = torch::where(halve4, grad_best, grad);
      k = std::max(k - sched.decrease, sched.min_gap);
      counter3 = 0;
    }
  }
  return out;
}

torch::Tensor Apgd::perturb(const LogitsFn& f, const torch::Tensor& x, const torch::Tensor& y) {
  cost_ = {};
  auto gen = make_generator(options_.seed());
  torch::Tensor adv = x.clone();
  // One clean pass gives both the points to attack and the number of classes.
  const auto clean = forward_chunked(f, x, options_.batch_size());
  cost_.forward_passes += x.size(0);
  torch::Tensor standing = clean.argmax(1).eq(y);
  const int64_t k = clean.size(1);
  if (options_.targeted() && k < 4) throw invalid_argument("--attacks apgd-t needs at least 4 classes");
  const int64_t n_targets = options_.targeted() ? std::min(options_.target_classes(), k - 1) : 1;
  runs_ = n_targets * options_.restarts();
  run_index_ = 0;
  for (int64_t target_rank = 2; target_rank < n_targets + 2; ++target_rank) {
    for (int64_t r = 0; r < options_.restarts(); ++r) {
      const auto idx = standing.nonzero().squeeze(1);
      if (idx.numel() == 0) return adv;
      const auto xs = x.index_select(0, idx), ys = y.index_select(0, idx);
      torch::Tensor target;
      if (options_.targeted()) {
        torch::NoGradGuard no_grad;
        const auto order = std::get<1>(forward_chunked(f, xs, options_.batch_size()).sort(1));
        cost_.forward_passes += xs.size(0);
        target = order.select(1, k - target_rank);
      }
      const RunResult res = single_run(f, xs, ys, target, gen);
      ++run_index_;
      const auto hits = res.fooled.nonzero().squeeze(1);
      adv.index_copy_(0, idx.index_select(0, hits), res.adv.index_select(0, hits));
      standing.index_fill_(0, idx.index_select(0, hits), false);
    }
  }
  return adv;
}

}  // namespace bulwark::attack
