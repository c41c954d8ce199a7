// control/gate.h — the gate a hardened candidate must pass before promotion: candidate and
// production side by side on the same held-out points, clean accuracy and robust accuracy under
// the policy's attack set (worst case per point over the set), each threshold checked and the
// first one that fails named.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "control/policy.h"

namespace bulwark::model {
class Model;
}
namespace bulwark::data {
struct Dataset;
}

namespace bulwark::control {

struct GateSide {
  double clean = 0, robust = 0;         // robust: worst case over the attack set at gate.eps
  nlohmann::json report;                // the attack suite's report (RobustnessReport::to_json)
};

struct GateResult {
  bool passed = false;
  std::string reason;  // "passed", or the threshold that failed with both numbers
  GateSide candidate, production;
  double seconds = 0;
  nlohmann::json to_json() const;
};

// Evaluates both models on `test` (the policy's n points from offset). Deterministic given seed.
GateResult run_gate(model::Model& candidate, model::Model& production, const data::Dataset& test,
                    const GatePolicy& gate, uint64_t seed);

}  // namespace bulwark::control
