#include <exception>

#include "threat/detail/gather.h"

namespace bulwark::threat::detail {
namespace {

using nlohmann::json;

std::optional<double> number_at(const json& j, const char* key) {
  if (!j.is_object() || !j.contains(key) || !j[key].is_number()) return std::nullopt;
  return j[key].get<double>();
}

}  // namespace

void gather_registry(registry::Registry& reg, const registry::VersionRecord& v, report::ThreatEvidence& out) {
  auto& i = out.integrity;
  i.is_signed = v.is_signed();
  i.key_id = v.key_id;
  try {
    reg.verify(v);
    i.verified = true;
  } catch (const std::exception& e) {
    i.verify_problem = e.what();
  }

  std::vector<registry::AuditEntry> entries;
  registry::AuditVerifyOptions options;
  options.entries_out = &entries;
  const auto verdict = reg.audit().verify(options);
  i.audit_ok = verdict.ok;
  i.audit_problem = verdict.problem;
  i.audit_entries = verdict.entries;
  i.audit_uncovered = verdict.uncovered;
  // Looked up in the entries exactly as verified: the register entry must name the version's files.
  for (const auto& e : entries) {
    if (e.action != "registry.register" || e.subject != v.ref()) continue;
    i.registered_in_audit = true;
    const json details = json::parse(e.details, nullptr, false);
    std::map<std::string, std::string> files;
    if (details.is_object() && details.contains("files") && details["files"].is_object()) {
      for (const auto& [name, sha] : details["files"].items()) {
        if (sha.is_string()) files[name] = sha.get<std::string>();
      }
    }
    i.audit_files_match = files == v.files;
  }

  const auto text = [&v](const char* key) {
    return v.lineage.contains(key) && v.lineage[key].is_string() ? v.lineage[key].get<std::string>() : "";
  };
  out.lineage.dataset = text("dataset");
  out.lineage.dataset_sha256 = text("dataset_sha256");
  out.lineage.method = text("method");
  out.lineage.eps = number_at(v.lineage, "eps");
  out.lineage.parent = v.parent;
  out.gate.clean = number_at(v.metrics, "clean");
  out.gate.robust = number_at(v.metrics, "robust");
}

}  // namespace bulwark::threat::detail
