// report/threat.h — the threat page for one model version: each MITRE ATLAS technique Bulwark
// checks, the ATLAS mitigations the check stands for, the evidence found, and a verdict against a
// policy. Names and descriptions come from the ATLAS data (report/atlas.h); the mapping of
// technique to check and mitigations is ours (threat_mapping.cpp). No evidence is "missing",
// never a pass.
//
//   const auto r = report::assess_threat(evidence, report::ThreatPolicy::load("policy.yaml"));
//   atomic_write_file("threat.html", report::render_threat_html(r));
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "report/atlas.h"
#include "report/threat_evidence.h"
#include "report/threat_policy.h"

namespace bulwark::report {

enum class Verdict { kPass, kWarn, kFail, kMissing };
std::string to_string(Verdict v);
// fail, then missing, then warn, then pass: the worst one decides a page's overall verdict.
int severity(Verdict v);

struct ThreatMitigation {
  std::string id, name;
  bool listed = false;     // ATLAS lists it for the row's technique
  std::string listed_for;  // when not: a parent or sub-technique ATLAS lists it for, else empty
  std::string use;         // ATLAS's words on how it applies (when listed)
};

struct ThreatRow {
  std::string key;  // stable name of the check ("robustness", "integrity", ...)
  std::string technique_id, technique_name, technique_summary;
  std::vector<ThreatMitigation> mitigations;
  std::string check;                  // what Bulwark checks, in a sentence
  std::vector<std::string> evidence;  // what it found, one line each
  Verdict verdict = Verdict::kMissing;
  std::string reason;  // why this verdict, naming the threshold
  std::string action;  // what to do (a bulwark command) when not a pass; empty on a pass
  nlohmann::json to_json() const;
};

struct ThreatReport {
  std::string atlas_version;
  std::string generated;  // UTC timestamp
  ThreatEvidence evidence;
  ThreatPolicy policy;
  std::string policy_source;  // the file, or "defaults"
  std::vector<ThreatRow> rows;
  Verdict overall() const;
  // The page's JSON (docs/schemas/threat-report.schema.json).
  nlohmann::json to_json() const;
};

// Judges `evidence` against `policy`, one row per check. `catalog` supplies every name.
ThreatReport assess_threat(const ThreatEvidence& evidence, const ThreatPolicy& policy,
                           const std::string& policy_source = "defaults",
                           const AtlasCatalog& catalog = AtlasCatalog::embedded());

// One self-contained page (Chart.js inlined, nothing loaded from the network). The page checks
// itself as the closed-loop report does: <body data-charts-expected data-charts-drawn data-errors>,
// plus data-rows (the technique rows the script found in the data block and the table).
std::string render_threat_html(const ThreatReport& report);
int threat_chart_count(const ThreatReport& report);

// The technique IDs and mitigation IDs Bulwark maps (for tests and docs).
std::vector<std::string> mapped_technique_ids();
std::vector<std::string> mapped_mitigation_ids();

}  // namespace bulwark::report
