#include "report/threat_policy.h"

#include <yaml-cpp/yaml.h>

#include <cmath>
#include <cstdio>
#include <functional>
#include <map>

#include "core/error.h"
#include "core/files.h"

namespace bulwark::report {
namespace {

using nlohmann::json;

// One reader per key: each parses its node and range-checks it, throwing with "FILE: section.key".
using Reader = std::function<void(const YAML::Node&, const std::string& where)>;

std::string text(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

double number(const YAML::Node& n, const std::string& where, double lo, double hi) {
  double v = 0;
  try {
    if (!n.IsScalar()) throw YAML::Exception(YAML::Mark::null_mark(), "");
    v = n.as<double>();
  } catch (const YAML::Exception&) {
    throw invalid_argument(where + ": must be a number in [" + text(lo) + ", " + text(hi) + "]");
  }
  if (!(std::isfinite(v) && v >= lo && v <= hi)) {
    throw invalid_argument(where + ": " + text(v) + " is outside [" + text(lo) + ", " + text(hi) +
                           "]");
  }
  return v;
}

int64_t integer(const YAML::Node& n, const std::string& where, int64_t lo, int64_t hi) {
  int64_t v = 0;
  try {
    if (!n.IsScalar()) throw YAML::Exception(YAML::Mark::null_mark(), "");
    v = n.as<int64_t>();
  } catch (const YAML::Exception&) {
    throw invalid_argument(where + ": must be an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
  }
  if (v < lo || v > hi) {
    throw invalid_argument(where + ": " + std::to_string(v) + " is outside [" + std::to_string(lo) + ", " +
                           std::to_string(hi) + "]");
  }
  return v;
}

bool boolean(const YAML::Node& n, const std::string& where) {
  try {
    if (!n.IsScalar()) throw YAML::Exception(YAML::Mark::null_mark(), "");
    return n.as<bool>();
  } catch (const YAML::Exception&) {
    throw invalid_argument(where + ": must be true or false");
  }
}

std::string known_keys(const std::map<std::string, Reader>& readers) {
  std::string out;
  for (const auto& [k, r] : readers) out += (out.empty() ? "" : ", ") + k;
  return out;
}

}  // namespace

std::string to_string(GuardMode mode) {
  switch (mode) {
    case GuardMode::kOff:
      return "off";
    case GuardMode::kFlag:
      return "flag";
    case GuardMode::kThrottle:
      return "throttle";
    case GuardMode::kEscalate:
      return "escalate";
    case GuardMode::kBlock:
      return "block";
  }
  return "off";
}

GuardMode parse_guard_mode(const std::string& text, const std::string& where) {
  for (auto m : {GuardMode::kOff, GuardMode::kFlag, GuardMode::kThrottle, GuardMode::kEscalate, GuardMode::kBlock}) {
    if (to_string(m) == text) return m;
  }
  throw invalid_argument(where + ": '" + text + "' is not one of off, flag, throttle, escalate, block");
}

ThreatPolicy ThreatPolicy::load(const std::string& path) { return parse(read_file(path), path); }

ThreatPolicy ThreatPolicy::parse(const std::string& yaml_text, const std::string& source) {
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::Exception& e) {
    throw data_format(source + ": not YAML: " + e.what());
  }
  ThreatPolicy p;
  if (root.IsNull()) return p;  // an empty file: every default
  if (!root.IsMap()) throw invalid_argument(source + ": expected a map of sections (evasion, detection, ...)");
  const auto mode = [](GuardMode& out) {
    return [&out](const YAML::Node& n, const std::string& w) {
      if (!n.IsScalar()) throw invalid_argument(w + ": must be one of off, flag, throttle, escalate, block");
      out = parse_guard_mode(n.as<std::string>(), w);
    };
  };
  const std::map<std::string, std::map<std::string, Reader>> sections{
      {"evasion",
       {{"min_robust_accuracy", [&p](auto& n, auto& w) { p.evasion.min_robust_accuracy = number(n, w, 0, 1); }},
        {"eps",
         [&p](auto& n, auto& w) {
           if (!n.IsNull()) p.evasion.eps = number(n, w, 1e-9, 1e6);
         }}}},
      {"detection",
       {{"min_tpr", [&p](auto& n, auto& w) { p.detection.min_tpr = number(n, w, 0, 1); }},
        {"max_fpr", [&p](auto& n, auto& w) { p.detection.max_fpr = number(n, w, 0, 1); }}}},
      {"serving",
       {{"require_auth", [&p](auto& n, auto& w) { p.serving.require_auth = boolean(n, w); }},
        {"require_rate_limit", [&p](auto& n, auto& w) { p.serving.require_rate_limit = boolean(n, w); }},
        {"stateful", mode(p.serving.stateful)},
        {"extraction", mode(p.serving.extraction)}}},
      {"privacy",
       {{"max_auc", [&p](auto& n, auto& w) { p.privacy.max_auc = number(n, w, 0, 1); }},
        {"max_tpr_at_0_1pct_fpr", [&p](auto& n, auto& w) { p.privacy.max_tpr_at_0_1pct_fpr = number(n, w, 0, 1); }},
        {"max_tpr_at_1pct_fpr", [&p](auto& n, auto& w) { p.privacy.max_tpr_at_1pct_fpr = number(n, w, 0, 1); }}}},
      {"poison",
       {{"max_flagged_classes", [&p](auto& n, auto& w) { p.poison.max_flagged_classes = integer(n, w, 0, 1000000); }},
        {"max_suspected", [&p](auto& n, auto& w) { p.poison.max_suspected = integer(n, w, -1, INT64_MAX); }}}},
      {"integrity",
       {{"allow_unsigned", [&p](auto& n, auto& w) { p.integrity.allow_unsigned = boolean(n, w); }},
        {"max_uncovered_entries",
         [&p](auto& n, auto& w) { p.integrity.max_uncovered_entries = integer(n, w, 0, INT64_MAX); }}}},
  };
  std::string section_names;
  for (const auto& [name, keys] : sections) section_names += (section_names.empty() ? "" : ", ") + name;
  for (const auto& kv : root) {
    const std::string section = kv.first.Scalar();
    const auto s = sections.find(section);
    if (s == sections.end()) {
      throw invalid_argument(source + ": " + section + ": unknown section (known: " + section_names + ")");
    }
    if (kv.second.IsNull()) continue;
    if (!kv.second.IsMap()) throw invalid_argument(source + ": " + section + ": must be a map of keys to values");
    for (const auto& entry : kv.second) {
      const std::string key = entry.first.Scalar();
      const std::string where = source + ": " + section + "." + key;
      const auto r = s->second.find(key);
      if (r == s->second.end()) {
        throw invalid_argument(where + ": unknown key (known in " + section + ": " + known_keys(s->second) + ")");
      }
      r->second(entry.second, where);
    }
  }
  return p;
}

json ThreatPolicy::to_json() const {
  return {{"evasion",
           {{"min_robust_accuracy", evasion.min_robust_accuracy},
            {"eps", evasion.eps ? json(*evasion.eps) : json(nullptr)}}},
          {"detection", {{"min_tpr", detection.min_tpr}, {"max_fpr", detection.max_fpr}}},
          {"serving",
           {{"require_auth", serving.require_auth},
            {"require_rate_limit", serving.require_rate_limit},
            {"stateful", to_string(serving.stateful)},
            {"extraction", to_string(serving.extraction)}}},
          {"privacy",
           {{"max_auc", privacy.max_auc},
            {"max_tpr_at_0_1pct_fpr", privacy.max_tpr_at_0_1pct_fpr},
            {"max_tpr_at_1pct_fpr", privacy.max_tpr_at_1pct_fpr}}},
          {"poison", {{"max_flagged_classes", poison.max_flagged_classes}, {"max_suspected", poison.max_suspected}}},
          {"integrity",
           {{"allow_unsigned", integrity.allow_unsigned}, {"max_uncovered_entries", integrity.max_uncovered_entries}}}};
}

}  // namespace bulwark::report
