// attack/evaluate.h — robustness evaluation a researcher would trust: every attack on the points
// the model gets right, the per-sample worst case over attacks, the AutoAttack-style cascade
// (`auto`), and warnings for the usual signs of gradient masking.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/types.h>

#include "attack/base.h"
#include "attack/factory.h"
#include "core/cancel.h"

namespace bulwark::attack {

struct SuiteOptions {
  std::vector<std::string> attacks;  // names (factory.h); in cascade mode, run in order
  std::vector<double> eps;           // ascending after validation
  bool cascade = false;              // `auto`: each attack only on points still robust
  AttackSettings settings;  // includes batch_size, the memory bound
  bool progress = true;
  bool masking_checks = true;
  CancelFlag cancel;  // set: the suite throws Cancelled at the next attack iteration (the closed loop's stop)
};

struct AttackRow {
  std::string attack;  // in cascade mode "apgd-ce", "+apgd-t", ... (cumulative)
  double eps = 0;
  int64_t attacked = 0;  // points the attack ran on
  int64_t robust = 0;    // of all n points: still correct after this attack (cumulative in cascade)
  double robust_accuracy = 0;
  double success_rate = 0;  // fooled / attacked
  double max_norm = 0;      // over successful adversarials
  double mean_norm = 0;
  double mean_queries = -1;  // black-box attacks only
  double seconds = 0;
  AttackCost cost;
  nlohmann::json options;
  nlohmann::json to_json() const;
};

struct WorstCase {
  double eps = 0;
  int64_t robust = 0;
  double robust_accuracy = 0;
  torch::Tensor adversarial;  // per point: the first successful adversarial, else x
};

struct RobustnessReport {
  int64_t n = 0;
  double clean_accuracy = 0;
  std::string norm;
  std::vector<AttackRow> rows;
  std::vector<WorstCase> worst;
  std::vector<std::string> warnings;
  double seconds = 0;
  nlohmann::json to_json() const;
};

// Runs the suite on (x, y) through f. f must be differentiable w.r.t. its input for the
// white-box attacks (freeze the model's parameters first).
RobustnessReport evaluate_robustness(const LogitsFn& f, const torch::Tensor& x, const torch::Tensor& y,
                                     SuiteOptions options);

// Per point, whether it is robust: classified correctly both clean (x) and at its adversarial
// (adv), the robust accuracy of RobustBench and AutoAttack. A point misclassified clean is never
// robust, wherever its adversarial lands. f runs in chunks of batch_size.
torch::Tensor robust_points(const LogitsFn& f, const torch::Tensor& x, const torch::Tensor& adv, const torch::Tensor& y,
                            int64_t batch_size);

// Raises the gradient-masking warnings that need no extra attack runs: Square beating the
// white-box attacks, robust accuracy rising with eps.
void check_report_consistency(RobustnessReport& report);

}  // namespace bulwark::attack
