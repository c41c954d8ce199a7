// report/robustness.h — robustness results as `bulwark --json attack` writes them (attack's
// RobustnessReport::to_json), read without depending on attack: per attack and eps, the robust
// accuracy; per eps, the worst case over attacks; the clean accuracy they start from.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "report/limits.h"

namespace bulwark::report {

struct RobustnessPoint {
  double eps = 0;
  double accuracy = 0;  // robust accuracy: share of the n inputs still classified correctly
};

struct RobustnessCurve {
  std::string attack;                   // "fgsm", "pgd", ...; "worst case" for the per-eps minimum
  std::vector<RobustnessPoint> points;  // eps increasing, no duplicates
};

struct RobustnessResult {
  std::string label;  // from LABEL=PATH: "baseline", "hardened"
  std::string path;
  std::string model;    // as recorded by `bulwark attack`, may be empty
  std::string dataset;  // may be empty
  std::string norm;     // "linf" | "l2": curves with different norms never share an axis
  int64_t n = 0;
  double clean_accuracy = 0;
  std::vector<RobustnessCurve> curves;  // one per attack, in order of first appearance
  RobustnessCurve worst_case;           // empty points when the file has no worst_case rows
};

// Required: n (int > 0), clean_accuracy (number in [0, 1]), norm (string), results (non-empty
// array of {attack: string, eps: number >= 0, robust_accuracy: number in [0, 1]}); optional:
// worst_case (array of {eps, robust_accuracy}), model, dataset (strings). Throws not_found,
// data_format ("PATH: field 'results[2].eps' ...") or resource-exhausted (over kMaxInputBytes).
RobustnessResult load_robustness(const std::string& label, const std::string& path);

}  // namespace bulwark::report
