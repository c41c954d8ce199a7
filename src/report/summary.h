// report/summary.h — the numbers at the top of a report, computed from its inputs: per traffic
// phase, accuracy on benign and attacked inputs, requests, failures, latency; how long the loop
// took to raise an alarm and to promote a hardened model once the attack began.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "report/inputs.h"

namespace bulwark::report {

// One phase name's seconds, pooled (a phase that recurs, benign → pgd → benign, is one row).
struct PhaseSummary {
  std::string phase;
  int64_t seconds = 0;
  int64_t sent = 0, ok = 0, failed = 0;
  int64_t benign_n = 0, benign_correct = 0, attacked_n = 0, attacked_correct = 0, flagged = 0;
  // Pooled over the phase's inputs (sum correct / sum n); nullopt when it had no such inputs.
  std::optional<double> benign_accuracy, attacked_accuracy, flag_rate;
  // The log holds per-second percentiles only: p50 is the median of the seconds' p50s, weighted by
  // answered requests; p99 is the highest second's p99, an upper bound on the phase's own p99.
  std::optional<double> latency_ms_p50, latency_ms_p99;
  std::vector<std::string> model_versions;  // in order of first appearance
};

struct ReportSummary {
  std::vector<PhaseSummary> phases;  // in order of first appearance
  double duration_s = 0;             // last t + 1
  // t of the first second with attacked inputs (attacked_n > 0); nullopt when none.
  std::optional<double> attack_start_t;
  // From attack_start_t to the first "alarm" event at or after it.
  std::optional<double> time_to_alarm_s;
  // From attack_start_t to the first promotion at or after it: a "guard.promoted" event, or a
  // "guard.state" event entering "watching" or "stable".
  std::optional<double> time_to_promotion_s;
  int64_t alarms = 0;                // all "alarm" events
  int64_t alarms_before_attack = 0;  // false alarms: before attack_start_t (all, with no attack)
  int64_t events = 0;
  std::vector<std::string> model_versions;  // served, in order of first appearance

  nlohmann::json to_json() const;  // null for every nullopt
};

ReportSummary summarize(const ReportInputs& in);

}  // namespace bulwark::report
