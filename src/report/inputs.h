// report/inputs.h — what a report is made from, read strictly: the event log (detect's Event JSON
// lines), the traffic log (one JSON line per second; the contract is below and in docs/report.md)
// and robustness results (report/robustness.h). A malformed line is an error naming the file, the
// line and the field, never a silently shorter chart.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "report/limits.h"
#include "report/robustness.h"

namespace bulwark::report {

// One line of the event log, as detect::Event::to_json() writes it (read here without depending on
// detect). Required: time_s (finite number), kind (non-empty string). Optional, type-checked when
// present: time (string), detector, model, version, subject (strings), statistic, threshold,
// window_s (number or null), details (object or null). Unknown fields are ignored.
struct EventRecord {
  double time_s = 0;  // unix seconds
  std::string time;   // ISO-8601 UTC as written, may be empty
  std::string kind;   // "alarm", "guard.state", "guard.promoted", "guard.rolled-back", ...
  std::string detector, model, version, subject;
  std::optional<double> statistic, threshold, window_s;
  nlohmann::json details = nlohmann::json::object();
  int64_t line = 0;  // in the source file, for messages

  // details.to of a "guard.state" event (the state entered), else empty.
  std::string state_entered() const;
};

// The traffic log contract (written by `bulwark traffic`): one JSON object per line, one line per
// second of the run, `t` strictly increasing. Every field is required; unknown fields are ignored.
//   t                 number >= 0   seconds since the run started (the start of this second)
//   time_s            number        unix seconds at the same instant (aligns events with traffic)
//   phase             string        non-empty: "benign" | "fgsm" | "pgd" | "square" | ...
//   sent, ok, failed  int >= 0      requests sent this second; answered; failed (error or timeout);
//                                   ok + failed <= sent (the rest were still in flight at the end)
//   benign_n          int >= 0      clean inputs answered this second; benign_correct <= benign_n
//   benign_correct    int >= 0        of those, predicted as their label
//   attacked_n        int >= 0      adversarial inputs answered; attacked_correct <= attacked_n
//   attacked_correct  int >= 0        of those, still predicted as their true label
//   flagged           int >= 0      answered inputs the server's detector flagged;
//                                   flagged <= benign_n + attacked_n
//   latency_ms_p50    number >= 0 | null   median latency of this second's answers (null: none)
//   latency_ms_p99    number >= 0 | null   99th percentile, >= the p50
//   model_version     string        version that answered (the last answer's); "" when none did
// Accuracy is correct / n where n > 0; a second with n = 0 is a gap, not a zero.
struct TrafficSecond {
  double t = 0;
  double time_s = 0;
  std::string phase;
  int64_t sent = 0, ok = 0, failed = 0;
  int64_t benign_n = 0, benign_correct = 0;
  int64_t attacked_n = 0, attacked_correct = 0;
  int64_t flagged = 0;
  std::optional<double> latency_ms_p50, latency_ms_p99;
  std::string model_version;
};

// Where the inputs come from; robustness holds (label, path) pairs in the order given.
struct ReportSources {
  std::string events_path;
  std::string traffic_path;
  std::vector<std::pair<std::string, std::string>> robustness;
};

struct ReportInputs {
  ReportSources sources;
  std::vector<EventRecord> events;     // sorted by time_s (stable: file order among equal times)
  std::vector<TrafficSecond> traffic;  // in file order (t increasing)
  std::vector<RobustnessResult> robustness;

  // Unix time of t = 0 in the traffic log (time_s - t of its first line); events are placed on
  // the timeline at time_s minus this.
  double traffic_start_unix() const;
};

// Each throws not_found (missing file), data_format (empty file, bad line: "PATH:LINE: field 'x' ..."),
// or resource-exhausted (more than kMaxInputLines lines or kMaxInputBytes bytes).
std::vector<EventRecord> load_events(const std::string& path);
std::vector<TrafficSecond> load_traffic(const std::string& path);
// All of the above; also rejects duplicate or empty robustness labels (invalid_argument).
ReportInputs load_report_inputs(const ReportSources& sources);

// Parses "LABEL=PATH" (the --robustness flag); invalid_argument when either side is empty.
std::pair<std::string, std::string> parse_labelled_path(const std::string& text);

}  // namespace bulwark::report
