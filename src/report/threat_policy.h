// report/threat_policy.h — the thresholds a threat report judges evidence against, from a YAML
// file (`bulwark report threat --policy FILE`); every key optional, with the defaults below
// (docs/report.md lists them). An unknown key or a value of the wrong type or out of range is
// refused, naming the file and the key.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>

namespace bulwark::report {

// Per-client detector modes, weakest first; "escalate" (throttle, then block) ranks between.
enum class GuardMode { kOff, kFlag, kThrottle, kEscalate, kBlock };
std::string to_string(GuardMode mode);
// Throws invalid_argument naming `where` and the modes.
GuardMode parse_guard_mode(const std::string& text, const std::string& where);

struct ThreatPolicy {
  struct Evasion {
    double min_robust_accuracy = 0.4;  // worst attack at the judged eps; below: fail
    std::optional<double> eps;         // judge at this eps; default: the largest the run evaluated
  } evasion;
  struct Detection {
    double min_tpr = 0.5;   // the served flag's TPR at the calibrated threshold, lowest over attacks; below: fail
    double max_fpr = 0.05;  // the FPR measured on clean test inputs at that threshold; above: warn
  } detection;
  struct Serving {
    bool require_auth = true;                     // anonymous access: fail
    bool require_rate_limit = true;               // a token with the infer role and no rate: warn
    GuardMode stateful = GuardMode::kThrottle;    // off: fail; weaker than this: warn
    GuardMode extraction = GuardMode::kThrottle;  // the same for the extraction detector
  } serving;
  struct Privacy {
    double max_auc = 0.6;                 // the stronger attack's AUC; above: fail
    double max_tpr_at_0_1pct_fpr = 0.01;  // above: fail
    double max_tpr_at_1pct_fpr = 0.05;    // above: fail
  } privacy;
  struct Poison {
    int64_t max_flagged_classes = 0;  // above, or a scan that failed: fail
    int64_t max_suspected = -1;       // above: warn; -1: no limit
  } poison;
  struct Integrity {
    bool allow_unsigned = false;        // an unsigned version: fail, or warn when allowed
    int64_t max_uncovered_entries = 1;  // audit entries after the signed checkpoint; above: warn
  } integrity;

  // Throws invalid_argument "FILE: section.key: ..." on an unknown key or a bad value, and
  // not_found / data_format for a missing or non-YAML file.
  static ThreatPolicy load(const std::string& path);
  static ThreatPolicy parse(const std::string& yaml_text, const std::string& source);
  nlohmann::json to_json() const;
};

}  // namespace bulwark::report
