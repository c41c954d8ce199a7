// control/gate.h — the gate a hardened candidate must pass before promotion: candidate and
// production side by side on the same held-out points, clean accuracy and robust accuracy under
// the policy's attack set (worst case per point over the set), each threshold checked and the
// first one that fails named.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "control/policy.h"
#include "core/cancel.h"

namespace bulwark::model {
class Model;
}
namespace bulwark::data {
struct Dataset;
}

namespace bulwark::control {

struct GateSide {
  double clean = 0, robust = 0;         // robust: worst case over the attack set at gate.eps
  std::vector<std::string> warnings;    // the suite's gradient-masking warnings
  nlohmann::json report;                // the attack suite's report (RobustnessReport::to_json)
};

struct GateResult {
  bool passed = false;
  std::string reason;  // "passed", or the threshold that failed with both numbers
  GateSide candidate, production;
  int64_t first_version = 0;  // the lineage's first version, whose clean accuracy is the floor
  double first_clean = -1;    // -1: production is the first version
  double seconds = 0;
  nlohmann::json to_json() const;
};

// Evaluates both models on `test` (the policy's n points from offset), and `first` (the lineage's
// first version, when production is not it) on clean points only. Refuses, naming the rule: a
// candidate whose evaluation warns of gradient masking; clean accuracy more than max_clean_drop
// below production's or max_clean_drop_from_first below the first version's; robust accuracy
// below min_robust_accuracy. Deterministic given seed. `cancel`: throws Cancelled at the next
// attack iteration once set.
GateResult run_gate(model::Model& candidate, model::Model& production, const data::Dataset& test,
                    const GatePolicy& gate, uint64_t seed, model::Model* first = nullptr, int64_t first_version = 0,
                    const CancelFlag& cancel = nullptr);

}  // namespace bulwark::control
