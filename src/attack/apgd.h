// attack/apgd.h — Auto-PGD (Croce & Hein 2020, "Reliable evaluation of adversarial robustness
// with an ensemble of diverse parameter-free attacks"), following the reference implementation
// (autoattack/autopgd_base.py): step size 2·eps, momentum 0.75, step-size checkpoints at
// p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06) of the budget, halving and restart from the best
// point on oscillation or stagnation. APGD-CE / APGD-DLR (untargeted) and APGD-T (targeted DLR
// against the top-k other classes).
//
// One departure that cannot change the outcome: a point leaves the batch once it is
// misclassified (all state is per sample), so later iterations only pay for points standing.
#pragma once

#include <vector>

#include "attack/base.h"
#include "attack/losses.h"

namespace bulwark::attack {

class ApgdOptions : public CommonOptions<ApgdOptions> {
 public:
  explicit ApgdOptions(double eps) : CommonOptions(eps) {}
  ApgdOptions& steps(int64_t v);           // n_iter, default 100
  ApgdOptions& restarts(int64_t v);        // default 1
  ApgdOptions& loss(Loss v);               // kCrossEntropy (APGD-CE) or kDlr; ignored when targeted
  ApgdOptions& rho(double v);              // default 0.75
  ApgdOptions& targeted(bool v);           // APGD-T
  ApgdOptions& target_classes(int64_t v);  // APGD-T: top-k other classes, default 9

  int64_t steps() const { return steps_; }
  int64_t restarts() const { return restarts_; }
  Loss loss() const { return loss_; }
  double rho() const { return rho_; }
  bool targeted() const { return targeted_; }
  int64_t target_classes() const { return target_classes_; }
  nlohmann::json to_json() const;

 private:
  int64_t steps_ = 100;
  int64_t restarts_ = 1;
  Loss loss_ = Loss::kCrossEntropy;
  double rho_ = 0.75;
  bool targeted_ = false;
  int64_t target_classes_ = 9;
};

class Apgd : public Attack {
 public:
  explicit Apgd(ApgdOptions o) : options_(std::move(o)) {}
  std::string name() const override;
  const Threat& threat() const override { return options_.threat(); }
  torch::Tensor perturb(const LogitsFn& f, const torch::Tensor& x, const torch::Tensor& y) override;
  nlohmann::json to_json() const override { return options_.to_json(); }

 private:
  struct RunResult {
    torch::Tensor fooled;  // bool [N]
    torch::Tensor adv;     // [N, ...]: adversarial where fooled
  };
  RunResult single_run(const LogitsFn& f, const torch::Tensor& x, const torch::Tensor& y, const torch::Tensor& target,
                       torch::Generator& gen);
  ApgdOptions options_;
  int64_t runs_ = 1, run_index_ = 0;  // for progress across targets and restarts
};

// 1-based iterations after which APGD checks (and may halve) its step size, for a budget of
// n_iter, computed with the reference's counters. For 100: 22, 41, 57, 70, 80, 87, 93, 99.
std::vector<int64_t> apgd_checkpoints(int64_t n_iter);

}  // namespace bulwark::attack
