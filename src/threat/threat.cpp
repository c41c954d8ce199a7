#include "threat/threat.h"

#include "core/files.h"
#include "threat/detail/gather.h"

namespace bulwark::threat {

report::ThreatEvidence gather_threat_evidence(const ThreatSources& sources) {
  // Read-only: a report writes nothing (verify's failure audit included). allow_unsigned: an
  // unsigned version is still checked for its digests, and the policy decides what unsigned means.
  registry::Registry reg(sources.registry, registry::local_actor(), /*allow_unsigned=*/true,
                         registry::Registry::Access::kReadOnly);
  const auto v = reg.resolve(registry::parse_reference(sources.model));
  report::ThreatEvidence e;
  e.registry = reg.location();
  e.model = v.ref();
  e.requested = sources.model;
  e.stage = registry::to_string(v.stage);
  e.files = v.files;
  const auto model_file = v.files.find("model.pt");
  if (model_file == v.files.end()) throw data_format(v.ref() + ": the version has no model.pt");
  e.model_sha256 = model_file->second;
  detail::gather_registry(reg, v, e);

  if (auto run = detail::newest_run(reg, "attack", e.model_sha256)) e.attack = detail::attack_evidence(*run);
  if (auto run = detail::newest_run(reg, "detect-evaluate", e.model_sha256)) {
    e.detection = detail::detection_evidence(*run);
  }
  if (auto run = detail::newest_run(reg, "privacy-audit", e.model_sha256)) e.privacy = detail::privacy_evidence(*run);
  if (auto run = detail::newest_run(reg, "poison-scan", e.model_sha256)) e.poison = detail::poison_evidence(*run);
  if (!sources.serve_config.empty()) {
    e.serve = detail::serve_evidence(sources.serve_config, v.model, v.files.count("model.detect") > 0);
  }
  return e;
}

report::ThreatReport write_threat_report(const ThreatOptions& o) {
  const report::ThreatPolicy policy = o.policy.empty() ? report::ThreatPolicy{} : report::ThreatPolicy::load(o.policy);
  const auto evidence = gather_threat_evidence(o.sources);
  auto r = report::assess_threat(evidence, policy, o.policy.empty() ? "defaults" : o.policy);
  atomic_write_file(o.out, report::render_threat_html(r));
  return r;
}

}  // namespace bulwark::threat
