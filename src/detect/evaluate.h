// detect/evaluate.h — how well calibrated detectors catch adversarial inputs, offline: the attack
// suite (FGSM, PGD, APGD-CE, Square) on held-out points the model gets right, each detector scored
// on the clean points (negatives) and on the successful adversarials (positives); and an adaptive
// attacker that knows the detectors (Carlini & Wagner 2017): PGD on a logit margin minus a
// detector-evasion term, through the detectors' own (straight-through) gradients.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/types.h>

#include "attack/factory.h"
#include "detect/calibration.h"

namespace bulwark::detect {

struct EvaluateOptions {
  std::vector<std::string> attacks{"fgsm", "pgd", "apgd-ce", "square"};
  std::vector<double> eps{0.1};
  attack::AttackSettings settings;  // pgd/apgd steps, square queries, batch size, seed
  bool adaptive = true;
  int64_t adaptive_steps = 100;
  double adaptive_weight = 5.0;  // λ on the evasion term
  bool progress = true;

  void validate() const;  // throws invalid_argument naming the flag
};

struct DetectionRow {
  std::string detector;  // a detector's name, or "combined"
  std::string attack;    // an attack name, or "adaptive" (aimed at `target`)
  std::string target;    // adaptive rows: what the attacker evaded ("combined" or a detector)
  double eps = 0;
  int64_t negatives = 0;  // clean points scored
  int64_t positives = 0;  // successful adversarials scored
  double auroc = 0;
  double tpr_at_1 = 0, tpr_at_5 = 0;  // at 1 % / 5 % FPR measured on these clean points
  double tpr_at_threshold = 0;        // at the calibrated threshold
  double fpr_at_threshold = 0;
  double clean_accuracy_lost = 0;  // correctly classified clean points flagged, share of all clean points
  double evasion = -1;             // adaptive: misclassified and not flagged, share of attacked points
  double seconds = 0;
  nlohmann::json to_json() const;
};

struct DetectionReport {
  int64_t n = 0;
  double clean_accuracy = 0;
  double fpr_target = 0;
  std::vector<std::string> detectors;
  std::vector<DetectionRow> rows;
  double seconds = 0;
  nlohmann::json to_json() const;
};

// Area under the ROC curve (ties count half) for positives scoring higher than negatives.
double auroc(const torch::Tensor& negatives, const torch::Tensor& positives);
// Share of positives above the (1 - fpr) quantile of the negatives.
double tpr_at_fpr(const torch::Tensor& negatives, const torch::Tensor& positives, double fpr);

// m is attacked white-box (its parameters are frozen for the duration).
DetectionReport evaluate_detection(model::Model& m, const DetectorSet& set, const torch::Tensor& x,
                                   const torch::Tensor& y, const EvaluateOptions& o);

// The adaptive attack alone: adversarials for (x, y) that try to be misclassified and not flagged
// by `target` (a calibrated set). Returns the final points.
torch::Tensor adaptive_attack(const model::Model& m, const DetectorSet& target, const torch::Tensor& x,
                              const torch::Tensor& y, double eps, const EvaluateOptions& o);

}  // namespace bulwark::detect
