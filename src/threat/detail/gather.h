// threat/detail/gather.h — the evidence gatherers, one file each: the registry's checks
// (registry_evidence.cpp), the run records (run_evidence.cpp), the serve config (serve_evidence.cpp).
#pragma once

#include <optional>
#include <string>

#include "registry/registry.h"
#include "report/threat_evidence.h"

namespace bulwark::threat::detail {

// Signature and digests, audit chain and the version's registration entry; lineage; gate metrics.
void gather_registry(registry::Registry& reg, const registry::VersionRecord& v, report::ThreatEvidence& out);

// The newest FINISHED run of `kind` whose model_sha256 tag is `model_sha256`; nullopt when none.
std::optional<registry::RunRecord> newest_run(registry::Registry& reg, const std::string& kind,
                                              const std::string& model_sha256);
std::optional<report::AttackEvidence> attack_evidence(const registry::RunRecord& run);
std::optional<report::DetectionEvidence> detection_evidence(const registry::RunRecord& run);
report::PrivacyEvidence privacy_evidence(const registry::RunRecord& run);
std::optional<report::PoisonEvidence> poison_evidence(const registry::RunRecord& run);

// `served_model`: the registry model's name, matched against the config's registry: references.
report::ServeEvidence serve_evidence(const std::string& config_path, const std::string& served_model,
                                     bool version_has_calibration);

}  // namespace bulwark::threat::detail
