#include "report/chart_data.h"

#include <algorithm>
#include <optional>
#include <string>
#include <vector>

namespace bulwark::report {
namespace {

using nlohmann::json;

json ratio_or_null(int64_t num, int64_t den) {
  return den > 0 ? json(static_cast<double>(num) / static_cast<double>(den)) : json(nullptr);
}

int index_of(std::vector<std::string>& list, const std::string& value) {
  auto it = std::find(list.begin(), list.end(), value);
  if (it == list.end()) it = list.insert(list.end(), value);
  return static_cast<int>(it - list.begin());
}

// Runs of equal phase names, each ending where the next begins (the last at x_max).
json phase_spans(const std::vector<TrafficSecond>& traffic, double x_max) {
  json spans = json::array();
  for (const auto& s : traffic) {
    if (!spans.empty() && spans.back()["phase"] == s.phase) continue;
    if (!spans.empty()) spans.back()["to"] = s.t;
    spans.push_back({{"from", s.t}, {"to", x_max}, {"phase", s.phase}});
  }
  return spans;
}

// Each guard.state event opens a band that the next one closes; bands are clipped to [0, x_max].
json state_bands(const ReportInputs& in, double x_max) {
  const double origin = in.traffic_start_unix();
  std::vector<std::pair<double, std::string>> changes;
  for (const auto& e : in.events) {
    if (const std::string to = e.state_entered(); !to.empty()) changes.emplace_back(e.time_s - origin, to);
  }
  json bands = json::array();
  for (size_t i = 0; i < changes.size(); ++i) {
    const double from = std::max(0.0, changes[i].first);
    const double to = std::min(x_max, i + 1 < changes.size() ? changes[i + 1].first : x_max);
    if (to > from) bands.push_back({{"from", from}, {"to", to}, {"state", changes[i].second}});
  }
  return bands;
}

std::string version_text(const json& details) {
  const auto v = details.find("version");
  if (v == details.end() || v->is_null()) return "";
  return v->is_string() ? v->get<std::string>() : v->dump();
}

// The first second of traffic, at or after `t`, answered by `version`: when clients saw the
// promotion or rollback land. The server names a registry model by its registry version, the
// loop's events name the same number; nullopt when the traffic never met it.
std::optional<double> served_from(const ReportInputs& in, const std::string& version, double t) {
  for (const auto& s : in.traffic) {
    if (s.t + 1 > t && s.model_version == version) return s.t;
  }
  return std::nullopt;
}

json event_markers(const ReportInputs& in, double x_max) {
  const double origin = in.traffic_start_unix();
  json markers = json::array();
  for (const auto& e : in.events) {
    if (std::find(std::begin(kMarkerKinds), std::end(kMarkerKinds), e.kind) == std::end(kMarkerKinds)) continue;
    const double t = e.time_s - origin;
    if (t < 0 || t > x_max) continue;  // outside the traffic log: listed in the event table only
    json m{{"t", t}, {"kind", e.kind}};
    if (e.kind == "alarm") {
      m["label"] = e.detector.empty() ? "alarm" : "alarm (" + e.detector + ")";
    } else {
      const std::string v = version_text(e.details);
      std::string label = e.kind == "guard.promoted" ? "promoted" : "rolled back";
      if (!v.empty()) {
        const auto from = served_from(in, v, t);
        label += " v" + v + (from ? "" : " (never answered in this traffic)");
        m["version"] = v;
        m["served_from"] = from ? json(*from) : json(nullptr);
      }
      m["label"] = label;
    }
    markers.push_back(m);
  }
  return markers;
}

// The curve from (0, clean accuracy) when the file has no eps = 0 row: no perturbation leaves
// exactly the clean accuracy on the same inputs.
json curve_points(const RobustnessResult& r, const RobustnessCurve& c) {
  json points = json::array();
  if (c.points.empty() || c.points.front().eps > 0) points.push_back({0.0, r.clean_accuracy});
  for (const auto& p : c.points) points.push_back({p.eps, p.accuracy});
  return points;
}

}  // namespace

json timeline_data(const ReportInputs& in) {
  json t = json::array(), benign = json::array(), attacked = json::array(), flags = json::array(),
       version = json::array();
  std::vector<std::string> versions;
  for (const auto& s : in.traffic) {
    t.push_back(s.t);
    benign.push_back(ratio_or_null(s.benign_correct, s.benign_n));
    attacked.push_back(ratio_or_null(s.attacked_correct, s.attacked_n));
    flags.push_back(ratio_or_null(s.flagged, s.benign_n + s.attacked_n));
    version.push_back(s.model_version.empty() ? json(nullptr) : json(index_of(versions, s.model_version)));
  }
  const double x_max = in.traffic.empty() ? 0 : in.traffic.back().t + 1;
  return json{{"t", t},
              {"benign_accuracy", benign},
              {"attacked_accuracy", attacked},
              {"flag_rate", flags},
              {"version_index", version},
              {"versions", versions},
              {"x_max", x_max},
              {"phases", phase_spans(in.traffic, x_max)},
              {"bands", state_bands(in, x_max)},
              {"markers", event_markers(in, x_max)}};
}

json robustness_data(const ReportInputs& in) {
  json groups = json::array();
  for (const auto& r : in.robustness) {
    auto group = std::find_if(groups.begin(), groups.end(), [&](const json& g) { return g["norm"] == r.norm; });
    if (group == groups.end()) {
      groups.push_back({{"norm", r.norm}, {"series", json::array()}});
      group = groups.end() - 1;
    }
    for (const auto& c : r.curves) {
      (*group)["series"].push_back(
          {{"label", r.label}, {"attack", c.attack}, {"worst_case", false}, {"points", curve_points(r, c)}});
    }
    // With one attack the worst case is that attack's curve again.
    if (r.curves.size() > 1 && !r.worst_case.points.empty()) {
      (*group)["series"].push_back({{"label", r.label},
                                    {"attack", r.worst_case.attack},
                                    {"worst_case", true},
                                    {"points", curve_points(r, r.worst_case)}});
    }
  }
  return groups;
}

json chart_data(const ReportInputs& in) {
  return json{{"timeline", timeline_data(in)}, {"robustness", robustness_data(in)}};
}

}  // namespace bulwark::report
