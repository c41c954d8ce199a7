// threat — the evidence behind `bulwark report threat`: for one model version in a registry, its
// signature, digests and audit-log record, its lineage and gate metrics, the newest finished run of
// each kind measured on its model file (matched by the runs' `model_sha256` tag, not by path), and
// the served configuration (auth, rate limits, per-client detectors, calibration). The report
// module judges and renders it; this module is the one that reads registry and serve types.
//
//   threat::ThreatOptions o{"reg", "fashion@production", "serve.yaml", "policy.yaml", "threat.html"};
//   const auto r = threat::write_threat_report(o);   // r.overall(), r.to_json()
#pragma once

#include <string>

#include "report/threat.h"

namespace bulwark::threat {

struct ThreatSources {
  std::string registry;      // a directory or postgresql:// URL (registry/location.h)
  std::string model;         // NAME@N, NAME@latest, NAME@production, NAME@staging (bare NAME: production)
  std::string serve_config;  // `bulwark serve --config` YAML; empty: not checked (those rows are missing)
};

// Opens the registry read-only (a report writes nothing, not even an audit entry) and gathers the
// evidence. Throws not_found for a missing registry or version, and data_format / invalid_argument
// naming the file and key for a malformed serve config or tokens file. A version that fails
// verification is evidence (the integrity row fails), not an error.
report::ThreatEvidence gather_threat_evidence(const ThreatSources& sources);

struct ThreatOptions {
  ThreatSources sources;
  std::string policy;  // YAML; empty: the documented defaults
  std::string out;     // the HTML page, written atomically
};

// Policy first (a bad key fails before any work), then evidence, verdicts and the page.
report::ThreatReport write_threat_report(const ThreatOptions& options);

}  // namespace bulwark::threat
