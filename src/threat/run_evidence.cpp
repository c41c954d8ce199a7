// Run records back into evidence. A run keeps the numbers of its command's result as metrics
// (cli/run_record.cpp: '.'-joined paths, strings dropped) and the command's options as params, so
// an attack's name is found again from its position: rows are in the order the command ran them.
#include <algorithm>
#include <map>
#include <set>

#include "attack/factory.h"
#include "threat/detail/gather.h"

namespace bulwark::threat::detail {
namespace {

using Metrics = std::map<std::string, double>;

// The last value logged under each key (a key logged per epoch keeps its last epoch's).
Metrics metrics_of(const registry::RunRecord& run) {
  Metrics m;
  for (const auto& x : run.metrics) m[x.key] = x.value;
  return m;
}

std::string param(const registry::RunRecord& run, const char* key) {
  return run.params.contains(key) && run.params[key].is_string() ? run.params[key].get<std::string>() : "";
}

report::RunRef ref_of(const registry::RunRecord& run) { return {run.run_id, run.kind, run.end_time}; }

// Rows "prefix.0.", "prefix.1.", ... up to the first index without `field`.
int64_t row_count(const Metrics& m, const std::string& prefix, const std::string& field) {
  int64_t n = 0;
  while (m.count(prefix + "." + std::to_string(n) + "." + field)) ++n;
  return n;
}

double at(const Metrics& m, const std::string& prefix, int64_t i, const std::string& field) {
  return m.at(prefix + "." + std::to_string(i) + "." + field);
}

// The attack list as the command parsed it; empty when the param is not one it accepts.
std::vector<std::string> attack_list(const std::string& param_value) {
  try {
    return attack::parse_attack_list(param_value);
  } catch (const Error&) {
    return {};
  }
}

}  // namespace

std::optional<registry::RunRecord> newest_run(registry::Registry& reg, const std::string& kind,
                                              const std::string& model_sha256) {
  for (const auto& r : registry::list_runs(reg, kind, 1000000)) {  // newest first
    if (r.status != "FINISHED") continue;
    auto full = registry::show_run(reg, r.run_id);
    if (full.tags.value("model_sha256", "") == model_sha256) return full;
  }
  return std::nullopt;
}

std::optional<report::AttackEvidence> attack_evidence(const registry::RunRecord& run) {
  const Metrics m = metrics_of(run);
  report::AttackEvidence a;
  a.run = ref_of(run);
  a.norm = param(run, "norm");
  a.n = m.count("n") ? static_cast<int64_t>(m.at("n")) : 0;
  a.clean_accuracy = m.count("clean_accuracy") ? m.at("clean_accuracy") : 0;
  const std::string attacks = param(run, "attacks");
  const auto names = attack_list(attacks);
  const bool cascade = attacks == "auto";
  for (size_t i = 0; i < names.size(); ++i) a.attacks.push_back(cascade && i > 0 ? "+" + names[i] : names[i]);
  const int64_t rows = row_count(m, "results", "robust_accuracy");
  // Per eps, one row per attack in the list's order (attack/evaluate.cpp); anything else is a
  // result this reader does not understand, better shown as no result than misnamed.
  if (a.attacks.empty() || rows % static_cast<int64_t>(a.attacks.size()) != 0) {
    a.attacks = names;
    return a;
  }
  for (int64_t i = 0; i < rows; ++i) {
    if (!m.count("results." + std::to_string(i) + ".eps")) return a;
    a.results.push_back(
        {a.attacks[i % a.attacks.size()], at(m, "results", i, "eps"), at(m, "results", i, "robust_accuracy")});
  }
  for (int64_t j = 0, n = row_count(m, "worst_case", "robust_accuracy"); j < n; ++j) {
    if (m.count("worst_case." + std::to_string(j) + ".eps")) {
      a.worst_case[at(m, "worst_case", j, "eps")] = at(m, "worst_case", j, "robust_accuracy");
    }
  }
  if (a.worst_case.empty()) {  // older records: the worst case is the lowest row at each eps
    for (const auto& r : a.results) {
      auto it = a.worst_case.find(r.eps);
      if (it == a.worst_case.end() || r.robust_accuracy < it->second) a.worst_case[r.eps] = r.robust_accuracy;
    }
  }
  return a;
}

std::optional<report::DetectionEvidence> detection_evidence(const registry::RunRecord& run) {
  const Metrics m = metrics_of(run);
  report::DetectionEvidence d;
  d.run = ref_of(run);
  d.fpr_target = m.count("fpr_target") ? m.at("fpr_target") : 0;
  const auto attacks = attack_list(param(run, "attacks"));
  // detect/evaluate.cpp: per eps, per attack, one row per detector then the combined flag (when
  // more than one detector); then per eps the adaptive rows (one per target, combined last), the
  // only rows with an `evasion`. The last row of each block is the flag the server raises.
  std::vector<int64_t> plain, adaptive;
  std::set<double> eps;
  for (int64_t i = 0, n = row_count(m, "rows", "tpr_at_threshold"); i < n; ++i) {
    if (m.count("rows." + std::to_string(i) + ".evasion")) {
      adaptive.push_back(i);
    } else {
      plain.push_back(i);
      eps.insert(at(m, "rows", i, "eps"));
    }
  }
  const size_t blocks = attacks.size() * eps.size();
  if (blocks == 0 || plain.size() % blocks != 0) return d;  // not a layout this reader knows: no results
  const size_t per_block = plain.size() / blocks;
  for (size_t b = 0; b < blocks; ++b) {
    const int64_t i = plain[(b + 1) * per_block - 1];
    d.results.push_back({attacks[b % attacks.size()], at(m, "rows", i, "eps"), at(m, "rows", i, "tpr_at_threshold"),
                         at(m, "rows", i, "fpr_at_threshold")});
  }
  if (!adaptive.empty() && adaptive.size() % per_block == 0) {
    for (size_t k = per_block - 1; k < adaptive.size(); k += per_block) {
      const double e = at(m, "rows", adaptive[k], "evasion");
      d.adaptive_evasion = d.adaptive_evasion ? std::max(*d.adaptive_evasion, e) : e;
    }
  }
  return d;
}

report::PrivacyEvidence privacy_evidence(const registry::RunRecord& run) {
  const Metrics m = metrics_of(run);
  report::PrivacyEvidence p;
  p.run = ref_of(run);
  for (const char* attack : {"loss", "lira"}) {
    for (const char* metric : {"auc", "tpr_at_0_1pct_fpr", "tpr_at_1pct_fpr"}) {
      const std::string key = std::string(attack) + "." + metric;
      if (m.count(key)) p.metrics[key] = m.at(key);
    }
  }
  return p;
}

std::optional<report::PoisonEvidence> poison_evidence(const registry::RunRecord& run) {
  const Metrics m = metrics_of(run);
  if (!m.count("failed")) return std::nullopt;  // a scan without its verdict is no evidence, not a pass
  report::PoisonEvidence p;
  p.run = ref_of(run);
  p.suspected = m.count("suspected") ? static_cast<int64_t>(m.at("suspected")) : 0;
  p.flagged_classes = m.count("flagged_classes") ? static_cast<int64_t>(m.at("flagged_classes")) : 0;
  p.failed = m.at("failed") != 0;
  return p;
}

}  // namespace bulwark::threat::detail
