#include "report/summary.h"

#include <algorithm>
#include <utility>

namespace bulwark::report {
namespace {

using nlohmann::json;

std::optional<double> ratio(int64_t num, int64_t den) {
  if (den <= 0) return std::nullopt;
  return static_cast<double>(num) / static_cast<double>(den);
}

json or_null(const std::optional<double>& v) { return v ? json(*v) : json(nullptr); }

void add_unique(std::vector<std::string>& list, const std::string& value) {
  if (!value.empty() && std::find(list.begin(), list.end(), value) == list.end()) list.push_back(value);
}

// Median of (value, weight) pairs: the smallest value with at least half the total weight at or
// below it. Seconds with no answers carry no latency and are never passed in.
std::optional<double> weighted_median(std::vector<std::pair<double, int64_t>> values) {
  int64_t total = 0;
  for (const auto& v : values) total += v.second;
  if (values.empty() || total <= 0) return std::nullopt;
  std::sort(values.begin(), values.end());
  int64_t seen = 0;
  for (const auto& [value, weight] : values) {
    seen += weight;
    if (2 * seen >= total) return value;
  }
  return values.back().first;
}

PhaseSummary summarize_phase(const std::string& phase, const std::vector<TrafficSecond>& traffic) {
  PhaseSummary p;
  p.phase = phase;
  std::vector<std::pair<double, int64_t>> p50s;
  for (const auto& s : traffic) {
    if (s.phase != phase) continue;
    ++p.seconds;
    p.sent += s.sent, p.ok += s.ok, p.failed += s.failed;
    p.benign_n += s.benign_n, p.benign_correct += s.benign_correct;
    p.attacked_n += s.attacked_n, p.attacked_correct += s.attacked_correct;
    p.flagged += s.flagged;
    if (s.latency_ms_p50) p50s.emplace_back(*s.latency_ms_p50, std::max<int64_t>(s.ok, 1));
    if (s.latency_ms_p99) p.latency_ms_p99 = std::max(p.latency_ms_p99.value_or(0.0), *s.latency_ms_p99);
    add_unique(p.model_versions, s.model_version);
  }
  p.benign_accuracy = ratio(p.benign_correct, p.benign_n);
  p.attacked_accuracy = ratio(p.attacked_correct, p.attacked_n);
  p.flag_rate = ratio(p.flagged, p.benign_n + p.attacked_n);
  p.latency_ms_p50 = weighted_median(std::move(p50s));
  return p;
}

bool is_promotion(const EventRecord& e) {
  const std::string to = e.state_entered();
  return e.kind == "guard.promoted" || to == "watching" || to == "stable";
}

// Seconds from the attack's start to the first event at or after it that `matches`.
template <typename Pred>
std::optional<double> time_to(const ReportInputs& in, double attack_start_t, Pred matches) {
  const double start_unix = in.traffic_start_unix() + attack_start_t;
  for (const auto& e : in.events) {
    if (e.time_s >= start_unix && matches(e)) return e.time_s - start_unix;
  }
  return std::nullopt;
}

json phase_json(const PhaseSummary& p) {
  return json{{"phase", p.phase},
              {"seconds", p.seconds},
              {"requests", p.sent},
              {"ok", p.ok},
              {"failed", p.failed},
              {"benign_n", p.benign_n},
              {"benign_accuracy", or_null(p.benign_accuracy)},
              {"attacked_n", p.attacked_n},
              {"attacked_accuracy", or_null(p.attacked_accuracy)},
              {"flag_rate", or_null(p.flag_rate)},
              {"latency_ms_p50", or_null(p.latency_ms_p50)},
              {"latency_ms_p99", or_null(p.latency_ms_p99)},
              {"model_versions", p.model_versions}};
}

}  // namespace

json ReportSummary::to_json() const {
  json phases_json = json::array();
  for (const auto& p : phases) phases_json.push_back(phase_json(p));
  return json{{"phases", phases_json},
              {"duration_s", duration_s},
              {"attack_start_t", or_null(attack_start_t)},
              {"time_to_alarm_s", or_null(time_to_alarm_s)},
              {"time_to_promotion_s", or_null(time_to_promotion_s)},
              {"alarms", alarms},
              {"alarms_before_attack", alarms_before_attack},
              {"events", events},
              {"model_versions", model_versions}};
}

ReportSummary summarize(const ReportInputs& in) {
  ReportSummary s;
  std::vector<std::string> phase_names;
  for (const auto& sec : in.traffic) {
    add_unique(phase_names, sec.phase);
    add_unique(s.model_versions, sec.model_version);
    if (!s.attack_start_t && sec.attacked_n > 0) s.attack_start_t = sec.t;
  }
  for (const auto& name : phase_names) s.phases.push_back(summarize_phase(name, in.traffic));
  if (!in.traffic.empty()) s.duration_s = in.traffic.back().t + 1;
  s.events = static_cast<int64_t>(in.events.size());
  const double attack_unix = s.attack_start_t ? in.traffic_start_unix() + *s.attack_start_t : 0;
  for (const auto& e : in.events) {
    if (e.kind != "alarm") continue;
    ++s.alarms;
    if (!s.attack_start_t || e.time_s < attack_unix) ++s.alarms_before_attack;
  }
  if (s.attack_start_t) {
    s.time_to_alarm_s = time_to(in, *s.attack_start_t, [](const EventRecord& e) { return e.kind == "alarm"; });
    s.time_to_promotion_s = time_to(in, *s.attack_start_t, is_promotion);
  }
  return s;
}

}  // namespace bulwark::report
