#include "report/threat.h"

#include <algorithm>
#include <chrono>
#include <ctime>
#include <set>

#include "report/detail/threat_rows.h"

namespace bulwark::report {
namespace {

using nlohmann::json;

json opt(const std::optional<double>& v) { return v ? json(*v) : json(nullptr); }

std::string utc_now() {
  const std::time_t t = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

// Which technique related to `technique_id` (its parent, or one of its sub-techniques) ATLAS lists
// `m` for: the mapping then stands on a neighbour's listing, and the page says so.
std::string listed_nearby(const AtlasCatalog& atlas, const AtlasMitigation& m, const std::string& technique_id) {
  const auto* t = atlas.technique(technique_id);
  if (t != nullptr && !t->parent.empty() && m.uses.count(t->parent)) return t->parent;
  for (const auto& [id, use] : m.uses) {
    if (id.rfind(technique_id + ".", 0) == 0) return id;
  }
  return "";
}

}  // namespace

std::string to_string(Verdict v) {
  switch (v) {
    case Verdict::kPass:
      return "pass";
    case Verdict::kWarn:
      return "warn";
    case Verdict::kFail:
      return "fail";
    case Verdict::kMissing:
      return "missing";
  }
  return "missing";
}

int severity(Verdict v) {
  switch (v) {
    case Verdict::kPass:
      return 0;
    case Verdict::kWarn:
      return 1;
    case Verdict::kMissing:
      return 2;
    case Verdict::kFail:
      return 3;
  }
  return 2;
}

json RunRef::to_json() const { return {{"run_id", run_id}, {"kind", kind}, {"end_time", end_time}}; }

json IntegrityEvidence::to_json() const {
  return {{"signed", is_signed},
          {"key_id", key_id},
          {"verified", verified},
          {"verify_problem", verify_problem},
          {"audit_ok", audit_ok},
          {"audit_problem", audit_problem},
          {"audit_entries", audit_entries},
          {"audit_uncovered", audit_uncovered},
          {"registered_in_audit", registered_in_audit},
          {"audit_files_match", audit_files_match}};
}

json LineageEvidence::to_json() const {
  return {{"dataset", dataset},
          {"dataset_sha256", dataset_sha256},
          {"method", method},
          {"eps", opt(eps)},
          {"parent", parent ? json(*parent) : json(nullptr)}};
}

json GateEvidence::to_json() const { return {{"clean", opt(clean)}, {"robust", opt(robust)}}; }

json AttackEvidence::to_json() const {
  json r = json::array(), w = json::array();
  for (const auto& x : results)
    r.push_back({{"attack", x.attack}, {"eps", x.eps}, {"robust_accuracy", x.robust_accuracy}});
  for (const auto& [eps, acc] : worst_case) w.push_back({{"eps", eps}, {"robust_accuracy", acc}});
  return {{"run", run.to_json()}, {"norm", norm}, {"n", n},         {"clean_accuracy", clean_accuracy},
          {"attacks", attacks},   {"results", r}, {"worst_case", w}};
}

json DetectionEvidence::to_json() const {
  json r = json::array();
  for (const auto& x : results) r.push_back({{"attack", x.attack}, {"eps", x.eps}, {"tpr", x.tpr}, {"fpr", x.fpr}});
  return {
      {"run", run.to_json()}, {"fpr_target", fpr_target}, {"results", r}, {"adaptive_evasion", opt(adaptive_evasion)}};
}

json PrivacyEvidence::to_json() const { return {{"run", run.to_json()}, {"metrics", metrics}}; }

json PoisonEvidence::to_json() const {
  return {{"run", run.to_json()}, {"suspected", suspected}, {"flagged_classes", flagged_classes}, {"failed", failed}};
}

json ServeEvidence::to_json() const {
  json t = json::array();
  for (const auto& x : tokens) t.push_back({{"id", x.id}, {"roles", x.roles}, {"rate_per_s", x.rate_per_s}});
  return {{"config", config_path},
          {"served_as", served_as},
          {"auth", auth},
          {"tokens", t},
          {"tls", tls},
          {"stateful", stateful},
          {"extraction", extraction},
          {"calibration", calibration},
          {"calibration_source", calibration_source},
          {"access_log", access_log},
          {"events", events}};
}

json ThreatEvidence::to_json() const {
  const auto maybe = [](const auto& v) { return v ? v->to_json() : json(nullptr); };
  return {{"registry", registry},
          {"model", model},
          {"requested", requested},
          {"stage", stage},
          {"model_sha256", model_sha256},
          {"files", files},
          {"integrity", integrity.to_json()},
          {"lineage", lineage.to_json()},
          {"gate", gate.to_json()},
          {"attack", maybe(attack)},
          {"detection", maybe(detection)},
          {"privacy", maybe(privacy)},
          {"poison", maybe(poison)},
          {"serve", maybe(serve)}};
}

json ThreatRow::to_json() const {
  json m = json::array();
  for (const auto& x : mitigations) {
    m.push_back(
        {{"id", x.id}, {"name", x.name}, {"listed_by_atlas", x.listed}, {"listed_for", x.listed_for}, {"use", x.use}});
  }
  return {{"check_key", key},
          {"technique", {{"id", technique_id}, {"name", technique_name}, {"summary", technique_summary}}},
          {"mitigations", m},
          {"check", check},
          {"evidence", evidence},
          {"verdict", to_string(verdict)},
          {"reason", reason},
          {"action", action}};
}

Verdict ThreatReport::overall() const {
  Verdict worst = Verdict::kPass;
  for (const auto& r : rows) {
    if (severity(r.verdict) > severity(worst)) worst = r.verdict;
  }
  return worst;
}

json ThreatReport::to_json() const {
  json r = json::array();
  json counts = {{"pass", 0}, {"warn", 0}, {"fail", 0}, {"missing", 0}};
  for (const auto& row : rows) {
    r.push_back(row.to_json());
    counts[to_string(row.verdict)] = counts[to_string(row.verdict)].get<int>() + 1;
  }
  return {{"format", "bulwark.threat-report/1"},
          {"atlas", {{"version", atlas_version}, {"source", "mitre-atlas/atlas-data v5.6.1, dist/ATLAS.yaml"}}},
          {"generated", generated},
          {"model", evidence.model},
          {"overall", to_string(overall())},
          {"counts", counts},
          {"policy", {{"source", policy_source}, {"values", policy.to_json()}}},
          {"rows", r},
          {"evidence", evidence.to_json()}};
}

ThreatReport assess_threat(const ThreatEvidence& evidence, const ThreatPolicy& policy, const std::string& policy_source,
                           const AtlasCatalog& atlas) {
  ThreatReport out;
  out.atlas_version = atlas.version();
  out.generated = utc_now();
  out.evidence = evidence;
  out.policy = policy;
  out.policy_source = policy_source;
  for (const auto& spec : detail::row_specs()) {
    const auto* t = atlas.technique(spec.technique);
    if (t == nullptr) throw internal_error("ATLAS " + atlas.version() + " has no technique " + spec.technique);
    ThreatRow row;
    row.key = spec.key;
    row.technique_id = t->id;
    row.technique_name = atlas.full_name(t->id);
    row.technique_summary = atlas_summary(t->description);
    row.check = spec.check;
    for (const auto& id : spec.mitigations) {
      const auto* m = atlas.mitigation(id);
      if (m == nullptr) throw internal_error("ATLAS " + atlas.version() + " has no mitigation " + id);
      ThreatMitigation tm{m->id, m->name, atlas.lists(id, t->id), "", ""};
      if (tm.listed) {
        tm.use = atlas_summary(m->uses.at(t->id));
      } else {
        tm.listed_for = listed_nearby(atlas, *m, t->id);
        if (!tm.listed_for.empty()) tm.use = atlas_summary(m->uses.at(tm.listed_for));
      }
      row.mitigations.push_back(std::move(tm));
    }
    spec.judge(evidence, policy, row);
    out.rows.push_back(std::move(row));
  }
  return out;
}

std::vector<std::string> mapped_technique_ids() {
  std::vector<std::string> out;
  for (const auto& s : detail::row_specs()) {
    if (std::find(out.begin(), out.end(), s.technique) == out.end()) out.push_back(s.technique);
  }
  return out;
}

std::vector<std::string> mapped_mitigation_ids() {
  std::set<std::string> ids;
  for (const auto& s : detail::row_specs()) ids.insert(s.mitigations.begin(), s.mitigations.end());
  return {ids.begin(), ids.end()};
}

}  // namespace bulwark::report
