#include "report/inputs.h"

#include <algorithm>
#include <cmath>
#include <set>

#include "core/error.h"
#include "report/detail/fields.h"
#include "report/detail/text_input.h"

namespace bulwark::report {
namespace {

using detail::FieldReader;
using nlohmann::json;

json parse_line(const std::string& where, const std::string& text) {
  if (text.find_first_not_of(" \t\r") == std::string::npos) throw data_format(where + ": empty line");
  try {
    return json::parse(text);
  } catch (const json::parse_error& e) {
    throw data_format(where + ": not valid JSON (" + e.what() + ")");
  }
}

EventRecord parse_event(const json& j, const std::string& where, int64_t line) {
  const FieldReader f(j, where);
  EventRecord e;
  e.line = line;
  e.time_s = f.number("time_s");
  e.time = f.string("time", false);
  e.kind = f.non_empty_string("kind");
  e.detector = f.string("detector", false);
  e.model = f.string("model", false);
  e.version = f.string("version", false);
  e.subject = f.string("subject", false);
  e.statistic = f.optional_number("statistic");
  e.threshold = f.optional_number("threshold");
  e.window_s = f.optional_number("window_s");
  if (const json* d = f.find("details"); d != nullptr && !d->is_null()) {
    if (!d->is_object()) throw f.error("details", "must be an object, got " + detail::shown(*d));
    e.details = *d;
  }
  if (e.kind == "guard.state") {
    const auto to = e.details.find("to");
    if (to == e.details.end() || !to->is_string() || to->get<std::string>().empty()) {
      throw f.error("details.to", "must be the state entered (a non-empty string) in a guard.state event");
    }
  }
  return e;
}

void check_traffic_consistency(const TrafficSecond& s, const FieldReader& f) {
  if (s.t < 0) throw f.error("t", "must be >= 0, got " + std::to_string(s.t));
  if (s.ok + s.failed > s.sent) {
    throw f.error("failed", "ok + failed (" + std::to_string(s.ok + s.failed) + ") exceeds sent (" +
                                std::to_string(s.sent) + ")");
  }
  if (s.benign_correct > s.benign_n) throw f.error("benign_correct", "exceeds benign_n");
  if (s.attacked_correct > s.attacked_n) throw f.error("attacked_correct", "exceeds attacked_n");
  if (s.flagged > s.benign_n + s.attacked_n) throw f.error("flagged", "exceeds benign_n + attacked_n");
  for (const auto& [key, value] :
       {std::pair{"latency_ms_p50", s.latency_ms_p50}, {"latency_ms_p99", s.latency_ms_p99}}) {
    if (value && *value < 0) throw f.error(key, "must be >= 0");
  }
  if (s.latency_ms_p50 && s.latency_ms_p99 && *s.latency_ms_p99 < *s.latency_ms_p50) {
    throw f.error("latency_ms_p99", "is below latency_ms_p50");
  }
}

TrafficSecond parse_traffic(const json& j, const std::string& where) {
  const FieldReader f(j, where);
  TrafficSecond s;
  s.t = f.number("t");
  s.time_s = f.number("time_s");
  s.phase = f.non_empty_string("phase");
  s.sent = f.count("sent");
  s.ok = f.count("ok");
  s.failed = f.count("failed");
  s.benign_n = f.count("benign_n");
  s.benign_correct = f.count("benign_correct");
  s.attacked_n = f.count("attacked_n");
  s.attacked_correct = f.count("attacked_correct");
  s.flagged = f.count("flagged");
  s.latency_ms_p50 = f.nullable_number("latency_ms_p50");
  s.latency_ms_p99 = f.nullable_number("latency_ms_p99");
  s.model_version = f.string("model_version", true);
  check_traffic_consistency(s, f);
  return s;
}

}  // namespace

std::string EventRecord::state_entered() const {
  if (kind != "guard.state") return "";
  const auto to = details.find("to");
  return to != details.end() && to->is_string() ? to->get<std::string>() : "";
}

double ReportInputs::traffic_start_unix() const {
  return traffic.empty() ? 0 : traffic.front().time_s - traffic.front().t;
}

std::vector<EventRecord> load_events(const std::string& path) {
  std::vector<EventRecord> events;
  detail::for_each_line(path, "events file", [&](int64_t line, const std::string& text) {
    const std::string where = path + ":" + std::to_string(line);
    events.push_back(parse_event(parse_line(where, text), where, line));
  });
  // Publishers on different threads may interleave by a few milliseconds; the timeline needs order.
  std::stable_sort(events.begin(), events.end(),
                   [](const EventRecord& a, const EventRecord& b) { return a.time_s < b.time_s; });
  return events;
}

std::vector<TrafficSecond> load_traffic(const std::string& path) {
  std::vector<TrafficSecond> traffic;
  detail::for_each_line(path, "traffic file", [&](int64_t line, const std::string& text) {
    const std::string where = path + ":" + std::to_string(line);
    TrafficSecond s = parse_traffic(parse_line(where, text), where);
    if (!traffic.empty() && s.t <= traffic.back().t) {
      throw data_format(where + ": field 't' must increase from line to line (" + detail::shown(s.t) + " follows " +
                        detail::shown(traffic.back().t) + ")");
    }
    traffic.push_back(std::move(s));
  });
  return traffic;
}

std::pair<std::string, std::string> parse_labelled_path(const std::string& text) {
  const auto eq = text.find('=');
  if (eq == std::string::npos || eq == 0 || eq + 1 == text.size()) {
    throw invalid_argument("--robustness '" + text + "': give LABEL=PATH, e.g. baseline=attack-baseline.json");
  }
  return {text.substr(0, eq), text.substr(eq + 1)};
}

ReportInputs load_report_inputs(const ReportSources& sources) {
  std::set<std::string> labels;
  for (const auto& [label, path] : sources.robustness) {
    if (label.empty() || path.empty()) throw invalid_argument("robustness results need a label and a path");
    if (!labels.insert(label).second) throw invalid_argument("robustness label '" + label + "' is given twice");
  }
  ReportInputs in;
  in.sources = sources;
  in.events = load_events(sources.events_path);
  in.traffic = load_traffic(sources.traffic_path);
  for (const auto& [label, path] : sources.robustness) in.robustness.push_back(load_robustness(label, path));
  return in;
}

}  // namespace bulwark::report
