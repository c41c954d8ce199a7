#include "attack/evaluate.h"

#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>

#include "attack/losses.h"
#include "attack/pgd.h"
#include "core/error.h"
#include "core/progress.h"

namespace bulwark::attack {
namespace {

using Clock = std::chrono::steady_clock;

std::string fmt(const char* f, double v) {
  char buf[512];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

// Points outside the threat mean an attack is broken; never report numbers from it.
void verify_inside(const Threat& t, const torch::Tensor& adv, const torch::Tensor& x, const std::string& name) {
  const double tol = 1e-5;
  const auto norms = t.norm_of(adv - x);
  if (norms.numel() > 0 && norms.max().item<double>() > t.eps * (1 + 1e-5) + tol) {
    throw Error(ErrorKind::kInternal, name + " left the eps-ball (norm " + std::to_string(norms.max().item<double>()) + ")");
  }
  if (adv.numel() > 0 && (adv.min().item<double>() < t.lo - tol || adv.max().item<double>() > t.hi + tol)) {
    throw Error(ErrorKind::kInternal, name + " left the valid input range");
  }
}

torch::Tensor predict(const LogitsFn& f, const torch::Tensor& x, int64_t batch) { return forward_chunked(f, x, batch); }

// Runs one attack on the points in `mask`, in batches; returns the fooled mask (over all n),
// writing successful adversarials into `adv_out`.
torch::Tensor run_attack(const std::string& name, double eps, const SuiteOptions& o, const LogitsFn& f,
                         const torch::Tensor& x, const torch::Tensor& y, const torch::Tensor& mask,
                         torch::Tensor& adv_out, AttackRow& row) {
  const auto t0 = Clock::now();
  const auto idx = mask.nonzero().squeeze(1);
  row.attacked = idx.numel();
  torch::Tensor fooled = torch::zeros({x.size(0)}, torch::kBool);
  throw_if_cancelled(o.cancel, "the attack suite");
  ProgressBar bar(row.attack + " eps=" + fmt("%g", eps), 1000, o.progress);
  if (idx.numel() > 0) {
    // One call over every point: the attack keeps its chunks full as points fall.
    auto attack = make_attack(name, eps, o.settings);
    row.options = attack->to_json();
    attack->on_progress([&bar, &o](double fraction) {
      throw_if_cancelled(o.cancel, "the attack suite");
      bar.update(static_cast<int64_t>(1000 * fraction));
    });
    const auto xs = x.index_select(0, idx), ys = y.index_select(0, idx);
    const auto adv = attack->perturb(f, xs, ys);
    verify_inside(attack->threat(), adv, xs, name);
    const auto wrong = predict(f, adv, o.settings.batch_size).argmax(1).ne(ys);  // judged here, not by the attack
    row.cost = attack->cost();
    row.cost.forward_passes += xs.size(0);
    const auto hit = wrong.nonzero().squeeze(1);
    const auto where = idx.index_select(0, hit);
    fooled.index_fill_(0, where, true);
    adv_out.index_copy_(0, where, adv.index_select(0, hit));
    const auto norms = attack->threat().norm_of(adv.index_select(0, hit) - xs.index_select(0, hit));
    row.max_norm = norms.numel() ? norms.max().item<double>() : 0.0;
    row.mean_norm = norms.numel() ? norms.mean().item<double>() : 0.0;
    if (attack->queries().defined()) row.mean_queries = attack->queries().mean().item<double>();
  }
  const int64_t n_fooled = fooled.sum().item<int64_t>();
  row.success_rate = row.attacked ? static_cast<double>(n_fooled) / static_cast<double>(row.attacked) : 0.0;
  row.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  bar.finish(fmt("success %.1f%%", 100 * row.success_rate));
  return fooled;
}

void masking_probes(const LogitsFn& f, const torch::Tensor& x, const torch::Tensor& y, const SuiteOptions& o,
                    RobustnessReport& report) {
  const int64_t m = std::min<int64_t>(x.size(0), 200);
  const auto xs = x.narrow(0, 0, m), ys = y.narrow(0, 0, m);
  // Outputs that are probabilities (rows in [0,1] summing to 1) starve gradient attacks.
  const auto out = predict(f, xs, o.settings.batch_size);
  if (out.min().item<double>() >= 0 && out.max().item<double>() <= 1 &&
      (out.sum(1) - 1).abs().max().item<double>() < 1e-3) {
    report.warnings.push_back(
        "model outputs look like probabilities (rows in [0,1] summing to 1), not logits: gradient attacks may be "
        "weakened by saturation; export the model without the final softmax");
  }
  // Zero input gradients for many points: masking (quantisation, saturation, non-differentiable ops).
  const auto g = input_gradient(
      f, xs, [&](const torch::Tensor& z, int64_t s, int64_t len) { return ce_loss(z, ys.narrow(0, s, len)); },
      o.settings.batch_size);
  const double zero_frac = g.grad.flatten(1).abs().amax(1).eq(0).to(torch::kFloat).mean().item<double>();
  if (zero_frac > 0.1) {
    report.warnings.push_back(fmt("%.0f%% of points have an all-zero input gradient: gradients are masked; trust "
                                  "the black-box (square) and BPDA figures over the white-box ones",
                                  100 * zero_frac));
  }
  // At an eps that lets the attacker reach any input, robust accuracy must be ~0.
  const auto& s = o.settings;
  const double range = s.hi - s.lo;
  const double big = s.norm == Norm::kLinf ? range : range * std::sqrt(static_cast<double>(xs[0].numel()));
  Pgd pgd(PgdOptions(big).norm(s.norm).range(s.lo, s.hi).seed(s.seed).steps(20).batch_size(o.settings.batch_size));
  pgd.on_progress([&o](double) { throw_if_cancelled(o.cancel, "the attack suite"); });
  const auto adv = pgd.perturb(f, xs, ys);
  const double acc = robust_points(f, xs, adv, ys, o.settings.batch_size).to(torch::kFloat).mean().item<double>();
  if (acc > 0.1) {
    report.warnings.push_back(fmt("PGD-20 at a very large eps (the whole input range) still leaves %.1f%% robust "
                                  "accuracy; it should be ~0: gradients are likely masked",
                                  100 * acc));
  }
}

}  // namespace

nlohmann::json AttackRow::to_json() const {
  nlohmann::json j = {{"attack", attack},
                      {"eps", eps},
                      {"attacked", attacked},
                      {"robust", robust},
                      {"robust_accuracy", robust_accuracy},
                      {"success_rate", success_rate},
                      {"max_norm", max_norm},
                      {"mean_norm", mean_norm},
                      {"seconds", seconds},
                      {"gradient_passes", cost.gradient_passes},
                      {"forward_passes", cost.forward_passes},
                      {"options", options}};
  if (mean_queries >= 0) j["mean_queries"] = mean_queries;
  return j;
}

nlohmann::json RobustnessReport::to_json() const {
  nlohmann::json r = nlohmann::json::array(), w = nlohmann::json::array();
  for (const auto& row : rows) r.push_back(row.to_json());
  for (const auto& c : worst) w.push_back({{"eps", c.eps}, {"robust", c.robust}, {"robust_accuracy", c.robust_accuracy}});
  return {{"n", n},   {"clean_accuracy", clean_accuracy}, {"norm", norm},         {"results", r},
          {"worst_case", w}, {"warnings", warnings},     {"seconds", seconds}};
}

torch::Tensor robust_points(const LogitsFn& f, const torch::Tensor& x, const torch::Tensor& adv, const torch::Tensor& y,
                            int64_t batch_size) {
  const auto clean_correct = predict(f, x, batch_size).argmax(1).eq(y);
  return clean_correct.logical_and(predict(f, adv, batch_size).argmax(1).eq(y));
}

void check_report_consistency(RobustnessReport& report) {
  std::map<std::string, std::vector<const AttackRow*>> by_attack;
  std::map<double, std::vector<const AttackRow*>> by_eps;
  for (const auto& r : report.rows) {
    by_attack[r.attack].push_back(&r);
    by_eps[r.eps].push_back(&r);
  }
  for (auto& [name, rows] : by_attack) {
    std::sort(rows.begin(), rows.end(), [](auto* a, auto* b) { return a->eps < b->eps; });
    for (size_t i = 1; i < rows.size(); ++i) {
      if (rows[i]->robust_accuracy > rows[i - 1]->robust_accuracy + 0.005) {
        report.warnings.push_back(name + ": robust accuracy rises from " + fmt("%.1f%%", 100 * rows[i - 1]->robust_accuracy) +
                                  " at eps=" + fmt("%g", rows[i - 1]->eps) + " to " +
                                  fmt("%.1f%%", 100 * rows[i]->robust_accuracy) + " at eps=" + fmt("%g", rows[i]->eps) +
                                  "; it must not increase with eps (gradient masking or a too-weak attack)");
      }
    }
  }
  for (const auto& [eps, rows] : by_eps) {
    double white = 2.0, square = 2.0;
    for (const auto* r : rows) {
      if (r->attack == "square" || r->attack == "+square") square = std::min(square, r->robust_accuracy);
      else if (r->attack != "fgsm") white = std::min(white, r->robust_accuracy);
    }
    if (square <= 1.0 && white <= 1.0 && square < white - 0.002) {
      report.warnings.push_back("eps=" + fmt("%g", eps) + ": black-box square (" + fmt("%.1f%%", 100 * square) +
                                ") beats the white-box attacks (" + fmt("%.1f%%", 100 * white) +
                                ") by more than 0.2 points: gradients are likely masked");
    }
  }
}

RobustnessReport evaluate_robustness(const LogitsFn& f, const torch::Tensor& x, const torch::Tensor& y,
                                     SuiteOptions o) {
  const auto t0 = Clock::now();
  if (o.attacks.empty()) throw invalid_argument("--attacks is empty");
  if (o.eps.empty()) throw invalid_argument("--eps is empty");
  if (o.settings.batch_size < 1) throw invalid_argument("--batch must be positive");
  std::sort(o.eps.begin(), o.eps.end());
  RobustnessReport report;
  report.n = x.size(0);
  report.norm = to_string(o.settings.norm);
  const auto clean_correct = predict(f, x, o.settings.batch_size).argmax(1).eq(y);
  const int64_t n_clean = clean_correct.sum().item<int64_t>();
  report.clean_accuracy = report.n ? static_cast<double>(n_clean) / static_cast<double>(report.n) : 0.0;

  for (double eps : o.eps) {
    WorstCase worst{eps, 0, 0, x.clone()};
    torch::Tensor standing = clean_correct.clone();  // worst case over attacks so far
    for (size_t a = 0; a < o.attacks.size(); ++a) {
      const std::string& name = o.attacks[a];
      AttackRow row;
      row.attack = o.cascade && a > 0 ? "+" + name : name;
      row.eps = eps;
      const auto fooled = run_attack(name, eps, o, f, x, y, o.cascade ? standing : clean_correct, worst.adversarial, row);
      const auto own = clean_correct.logical_and(fooled.logical_not());
      standing = standing.logical_and(fooled.logical_not());
      row.robust = (o.cascade ? standing : own).sum().item<int64_t>();
      row.robust_accuracy = report.n ? static_cast<double>(row.robust) / static_cast<double>(report.n) : 0.0;
      report.rows.push_back(row);
    }
    worst.robust = standing.sum().item<int64_t>();
    worst.robust_accuracy = report.n ? static_cast<double>(worst.robust) / static_cast<double>(report.n) : 0.0;
    report.worst.push_back(worst);
  }
  check_report_consistency(report);
  if (o.masking_checks && report.n > 0) masking_probes(f, x, y, o, report);
  report.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  return report;
}

}  // namespace bulwark::attack
