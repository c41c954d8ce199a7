// The mapping from ATLAS techniques to Bulwark's checks, and each check's verdict. Only IDs are
// typed here; names, descriptions and which mitigations ATLAS lists for a technique come from the
// data (report/atlas.h). A check that found no evidence says "missing", never "pass".
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <optional>

#include "report/detail/threat_rows.h"

namespace bulwark::report::detail {
namespace {

std::string pct(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f%%", 100 * v);
  return buf;
}

std::string num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

std::string short_hash(const std::string& hex) { return hex.size() > 16 ? hex.substr(0, 16) + "…" : hex; }

std::string run_line(const RunRef& r) {
  return r.kind + " run " + r.run_id.substr(0, 12) + (r.end_time.empty() ? "" : " (finished " + r.end_time + ")");
}

void set(ThreatRow& row, Verdict v, std::string reason, std::string action = "") {
  row.verdict = v;
  row.reason = std::move(reason);
  row.action = v == Verdict::kPass ? "" : std::move(action);
}

// `R` = how the commands in the actions name the registry and the version.
struct Names {
  std::string registry, ref, model, export_dir = "exported";
  std::string exported_model() const { return export_dir + "/model.pt"; }
  std::string export_cmd() const {
    return "bulwark registry export " + ref + " " + export_dir + " --registry " + registry;
  }
};

Names names_of(const ThreatEvidence& e) {
  Names n;
  n.registry = e.registry.empty() ? "DIR" : e.registry;
  n.ref = e.model.empty() ? "NAME@N" : e.model;
  n.model = n.ref.substr(0, n.ref.find('@'));
  return n;
}

void judge_integrity(const ThreatEvidence& e, const ThreatPolicy& p, ThreatRow& row) {
  const auto& i = e.integrity;
  const Names n = names_of(e);
  row.evidence.push_back(i.is_signed ? "signed (OMS bundle), key " + short_hash(i.key_id) : "unsigned");
  for (const auto& [name, sha] : e.files) row.evidence.push_back(name + " sha256 " + short_hash(sha));
  row.evidence.push_back(i.verified ? "signature and object digests verify"
                                    : "verification failed: " + i.verify_problem);
  row.evidence.push_back(i.audit_ok ? "audit log verifies: " + std::to_string(i.audit_entries) +
                                          " entries, hash chain and signed checkpoint"
                                    : "audit log does not verify: " + i.audit_problem);
  row.evidence.push_back(!i.registered_in_audit ? "no registry.register entry for " + e.model + " in the audit log"
                         : i.audit_files_match  ? "its registry.register entry names the same files and digests"
                                                : "its registry.register entry names other files or digests");
  if (i.audit_uncovered > 0) {
    row.evidence.push_back(std::to_string(i.audit_uncovered) +
                           " newest audit entries not yet under a signed checkpoint");
  }
  const std::string reverify = "`bulwark registry verify " + n.ref + " --registry " + n.registry +
                               "` names the failing check; do not serve this version, register the model again from a "
                               "trusted copy (`bulwark registry register " +
                               n.model + " FILE --key KEY --registry " + n.registry + "`)";
  if (!i.verified) return set(row, Verdict::kFail, "the stored version does not verify", reverify);
  if (!i.audit_ok) {
    return set(row, Verdict::kFail, "the audit log does not verify",
               "`bulwark audit verify --registry " + n.registry +
                   "` names the first bad entry; compare with a published checkpoint (`--witness DIR`) and restore "
                   "the registry from a backup");
  }
  if (!i.registered_in_audit || !i.audit_files_match) {
    return set(row, Verdict::kFail, "the audit log does not record this version's files as registered", reverify);
  }
  if (!i.is_signed) {
    const std::string sign = "sign it: `bulwark keys gen --out ops && bulwark keys trust ops.pub --registry " +
                             n.registry + "`, then `bulwark registry register " + n.model +
                             " FILE --key ops.key --registry " + n.registry + "`";
    if (!p.integrity.allow_unsigned) {
      return set(row, Verdict::kFail, "unsigned, and integrity.allow_unsigned is false", sign);
    }
    return set(row, Verdict::kWarn, "unsigned (allowed by integrity.allow_unsigned)", sign);
  }
  if (i.audit_uncovered > p.integrity.max_uncovered_entries) {
    return set(
        row, Verdict::kWarn,
        std::to_string(i.audit_uncovered) +
            " audit entries outside the signed checkpoint, above "
            "integrity.max_uncovered_entries = " +
            std::to_string(p.integrity.max_uncovered_entries),
        "`bulwark audit show --registry " + n.registry + "` lists them; any registry write signs a fresh checkpoint");
  }
  set(row, Verdict::kPass, "signed, every digest verifies, and the audit log records the registration");
}

void judge_provenance(const ThreatEvidence& e, const ThreatPolicy&, ThreatRow& row) {
  const auto& l = e.lineage;
  const Names n = names_of(e);
  if (!l.dataset.empty()) row.evidence.push_back("dataset " + l.dataset);
  if (!l.dataset_sha256.empty()) row.evidence.push_back("dataset sha256 " + short_hash(l.dataset_sha256));
  if (!l.method.empty()) row.evidence.push_back("method " + l.method + (l.eps ? ", eps " + num(*l.eps) : ""));
  if (l.parent) row.evidence.push_back("derived from version " + std::to_string(*l.parent));
  const std::string fix = "register the version with its data's digest: `bulwark registry register " + n.model +
                          " FILE --dataset NAME --dataset-sha256 $(sha256sum DATA | cut -c1-64) --key KEY --registry " +
                          n.registry + "`";
  if (!l.dataset_sha256.empty()) return set(row, Verdict::kPass, "the lineage names the training data and its digest");
  if (!l.dataset.empty())
    return set(row, Verdict::kWarn, "the lineage names the training data but not its digest", fix);
  set(row, Verdict::kMissing, "the version's lineage records no training data", fix);
}

void judge_poison(const ThreatEvidence& e, const ThreatPolicy& p, ThreatRow& row) {
  const Names n = names_of(e);
  const std::string scan = "`" + n.export_cmd() + " && bulwark poison scan --model " + n.exported_model() +
                           " --registry " + n.registry + "` (with the training data the model was trained on)";
  if (!e.poison) return set(row, Verdict::kMissing, "no finished poison-scan run for this model file", scan);
  const auto& s = *e.poison;
  row.evidence.push_back(run_line(s.run));
  row.evidence.push_back(std::to_string(s.suspected) + " suspected images, " + std::to_string(s.flagged_classes) +
                         " flagged classes; the scan " + (s.failed ? "failed the training set" : "passed it"));
  const std::string clean =
      "`bulwark poison scan` lists the suspected images: remove them from the training set, "
      "retrain, register the new model and scan again";
  if (s.failed) return set(row, Verdict::kFail, "the poison scan failed the training set", clean);
  if (s.flagged_classes > p.poison.max_flagged_classes) {
    return set(row, Verdict::kFail,
               std::to_string(s.flagged_classes) + " flagged classes, above poison.max_flagged_classes = " +
                   std::to_string(p.poison.max_flagged_classes),
               clean);
  }
  if (p.poison.max_suspected >= 0 && s.suspected > p.poison.max_suspected) {
    return set(row, Verdict::kWarn,
               std::to_string(s.suspected) +
                   " suspected images, above poison.max_suspected = " + std::to_string(p.poison.max_suspected),
               clean);
  }
  set(row, Verdict::kPass, "the poison scan passed the training set");
}

bool is_fgsm(const std::string& attack) { return attack == "fgsm" || attack == "+fgsm"; }

void judge_robustness(const ThreatEvidence& e, const ThreatPolicy& p, ThreatRow& row) {
  const Names n = names_of(e);
  const double min_acc = p.evasion.min_robust_accuracy;
  const std::string eps_text = p.evasion.eps ? num(*p.evasion.eps) : (e.lineage.eps ? num(*e.lineage.eps) : "EPS");
  const std::string attack_cmd = n.export_cmd() + " && bulwark attack --model " + n.exported_model() +
                                 " --attacks auto --eps " + eps_text + " --registry " + n.registry;
  const std::string harden = "harden and register the result: `bulwark harden --model " + n.exported_model() +
                             " --method pgd-at --eps " + eps_text +
                             " --out hardened.pt`, then `bulwark registry "
                             "register " +
                             n.model + " hardened.pt --parent " + n.ref.substr(n.ref.find('@') + 1) +
                             " --method pgd-at --eps " + eps_text + " --key KEY --registry " + n.registry +
                             "` (or let `bulwark guard` do it)";
  if (e.gate.clean || e.gate.robust) {
    row.evidence.push_back("the loop's gate at registration: clean " + (e.gate.clean ? pct(*e.gate.clean) : "-") +
                           ", robust " + (e.gate.robust ? pct(*e.gate.robust) : "-"));
  }
  if (!e.attack) {
    if (e.gate.robust) {
      const bool ok = *e.gate.robust >= min_acc;
      return set(row, ok ? Verdict::kWarn : Verdict::kFail,
                 "no attack run for this model file; the gate's robust accuracy " + pct(*e.gate.robust) +
                     (ok ? " meets " : " is below ") + "evasion.min_robust_accuracy = " + pct(min_acc) +
                     (ok ? ", but only an attack run shows which attacks and eps" : ""),
                 ok ? "`" + attack_cmd + "`" : harden);
    }
    return set(row, Verdict::kMissing, "no finished attack run for this model file", "`" + attack_cmd + "`");
  }
  const auto& a = *e.attack;
  std::string attacks;
  for (const auto& s : a.attacks) attacks += (attacks.empty() ? "" : ", ") + s;
  row.evidence.push_back(run_line(a.run));
  row.evidence.push_back(std::to_string(a.n) + " test images, " + a.norm + ", attacks " + attacks +
                         "; clean accuracy " + pct(a.clean_accuracy));
  if (a.worst_case.empty())
    return set(row, Verdict::kMissing, "the attack run recorded no results", "`" + attack_cmd + "`");
  double eps = a.worst_case.rbegin()->first;
  if (p.evasion.eps) {
    const auto it = std::find_if(a.worst_case.begin(), a.worst_case.end(),
                                 [&](const auto& kv) { return std::abs(kv.first - *p.evasion.eps) < 1e-9; });
    if (it == a.worst_case.end()) {
      return set(row, Verdict::kMissing, "the newest attack run did not evaluate evasion.eps = " + num(*p.evasion.eps),
                 "`" + attack_cmd + "`");
    }
    eps = it->first;
  }
  const double worst = a.worst_case.at(eps);
  std::string per_attack;
  for (const auto& r : a.results) {
    if (r.eps == eps) per_attack += (per_attack.empty() ? "" : ", ") + r.attack + " " + pct(r.robust_accuracy);
  }
  row.evidence.push_back("worst case at eps " + num(eps) + ": " + pct(worst) + " (" + per_attack + ")");
  if (worst < min_acc) {
    return set(row, Verdict::kFail,
               "robust accuracy " + pct(worst) + " at eps " + num(eps) +
                   " is below evasion.min_robust_accuracy = " + pct(min_acc),
               harden);
  }
  if (std::all_of(a.attacks.begin(), a.attacks.end(), is_fgsm)) {
    return set(row, Verdict::kWarn,
               "only FGSM was run: robustness claims need strong attacks (PGD, APGD, Square); FGSM overstates them",
               "`" + attack_cmd + "`");
  }
  set(row, Verdict::kPass,
      "robust accuracy " + pct(worst) + " at eps " + num(eps) + " meets evasion.min_robust_accuracy = " + pct(min_acc));
}

void judge_detection(const ThreatEvidence& e, const ThreatPolicy& p, ThreatRow& row) {
  const Names n = names_of(e);
  const std::string evaluate = n.export_cmd() + " && bulwark detect evaluate --model " + n.exported_model() +
                               " --calibration " + n.export_dir + "/model.detect --registry " + n.registry;
  const bool versioned_calibration = e.files.count("model.detect") > 0;
  row.evidence.push_back(versioned_calibration ? "the version carries a detector calibration (model.detect)"
                                               : "the version carries no detector calibration (model.detect)");
  if (e.serve) {
    row.evidence.push_back(e.serve->calibration ? "served with a calibrated detector: " + e.serve->calibration_source
                                                : "served without a calibrated detector");
  }
  if (!e.detection) {
    return set(row, Verdict::kMissing, "no finished detect-evaluate run for this model file",
               versioned_calibration ? "`" + evaluate + "`"
                                     : "calibrate (`bulwark detect calibrate --model MODEL.pt --out model.detect`), "
                                       "register the version with `--calibration model.detect`, then `" +
                                           evaluate + "`");
  }
  const auto& d = *e.detection;
  row.evidence.push_back(run_line(d.run) + ", calibrated at FPR " + pct(d.fpr_target));
  if (d.results.empty())
    return set(row, Verdict::kMissing, "the detect-evaluate run recorded no results", "`" + evaluate + "`");
  const auto lowest =
      std::min_element(d.results.begin(), d.results.end(), [](const auto& x, const auto& y) { return x.tpr < y.tpr; });
  const auto highest_fpr =
      std::max_element(d.results.begin(), d.results.end(), [](const auto& x, const auto& y) { return x.fpr < y.fpr; });
  for (const auto& r : d.results) {
    row.evidence.push_back(r.attack + " at eps " + num(r.eps) + ": TPR " + pct(r.tpr) + " at FPR " + pct(r.fpr));
  }
  if (d.adaptive_evasion) row.evidence.push_back("adaptive attack evades the flag on " + pct(*d.adaptive_evasion));
  const std::string stronger =
      "calibrate more detectors (`bulwark detect calibrate --detectors "
      "max-softmax,entropy,squeeze,mahalanobis,pca`), register the calibration with the "
      "version (`--calibration`), and evaluate again: `" +
      evaluate + "`";
  if (lowest->tpr < p.detection.min_tpr) {
    return set(row, Verdict::kFail,
               "TPR " + pct(lowest->tpr) + " against " + lowest->attack + " at eps " + num(lowest->eps) +
                   " is below detection.min_tpr = " + pct(p.detection.min_tpr),
               stronger);
  }
  if (highest_fpr->fpr > p.detection.max_fpr) {
    return set(
        row, Verdict::kWarn,
        "FPR " + pct(highest_fpr->fpr) + " on clean inputs is above detection.max_fpr = " + pct(p.detection.max_fpr),
        "calibrate again at a lower FPR (`bulwark detect calibrate --fpr 0.01 ...`)");
  }
  if (e.serve && !e.serve->calibration) {
    return set(row, Verdict::kWarn, "the detector was evaluated but the server does not run it",
               "register the version with `--calibration model.detect`, or set `calibration: {NAME: FILE}` in " +
                   e.serve->config_path);
  }
  set(row, Verdict::kPass, "lowest TPR " + pct(lowest->tpr) + " meets detection.min_tpr = " + pct(p.detection.min_tpr));
}

GuardMode mode_of(const std::string& text) {
  try {
    return parse_guard_mode(text, "");
  } catch (const Error&) {
    return GuardMode::kOff;  // an unknown mode in the config: serve refuses to start with it
  }
}

void judge_guard_mode(const ThreatEvidence& e, const std::string& key, const std::string& configured,
                      GuardMode required, const std::string& what, ThreatRow& row) {
  if (!e.serve) {
    return set(row, Verdict::kMissing, "no --serve-config given: the served configuration was not checked",
               "`bulwark report threat ... --serve-config serve.yaml`");
  }
  row.evidence.push_back(e.serve->config_path + ": " + key + ": " + configured);
  const GuardMode mode = mode_of(configured);
  const std::string fix = "set `" + key + ": " + to_string(std::max(required, GuardMode::kThrottle)) + "` in " +
                          e.serve->config_path + " (or `--" + key + "`) and restart or SIGHUP the server";
  if (required == GuardMode::kOff) return set(row, Verdict::kPass, "serving." + key + " is off: not required");
  if (mode == GuardMode::kOff) return set(row, Verdict::kFail, "the " + what + " is off", fix);
  if (mode < required) {
    return set(row, Verdict::kWarn,
               "the " + what + " only " + (mode == GuardMode::kFlag ? "flags" : to_string(mode)) + "; serving." + key +
                   " asks for " + to_string(required),
               fix);
  }
  set(row, Verdict::kPass,
      "the " + what + " is at " + to_string(mode) + " (serving." + key + ": " + to_string(required) + ")");
}

void judge_query_crafting(const ThreatEvidence& e, const ThreatPolicy& p, ThreatRow& row) {
  judge_guard_mode(e, "stateful", e.serve ? e.serve->stateful : "", p.serving.stateful,
                   "per-client near-duplicate query detector", row);
}

void judge_extraction(const ThreatEvidence& e, const ThreatPolicy& p, ThreatRow& row) {
  judge_guard_mode(e, "extraction", e.serve ? e.serve->extraction : "", p.serving.extraction,
                   "per-client extraction detector", row);
}

void judge_access(const ThreatEvidence& e, const ThreatPolicy& p, ThreatRow& row) {
  if (!e.serve) {
    return set(row, Verdict::kMissing, "no --serve-config given: the served configuration was not checked",
               "`bulwark report threat ... --serve-config serve.yaml`");
  }
  const auto& s = *e.serve;
  if (!s.served_as.empty()) {
    std::string names;
    for (const auto& x : s.served_as) names += (names.empty() ? "" : ", ") + x;
    row.evidence.push_back("served as " + names);
  } else {
    row.evidence.push_back(s.config_path + " serves no registry: reference to " + names_of(e).model);
  }
  std::vector<std::string> unlimited;
  for (const auto& t : s.tokens) {
    std::string roles;
    for (const auto& r : t.roles) roles += (roles.empty() ? "" : ",") + r;
    row.evidence.push_back("token " + t.id + ": roles " + roles + ", " +
                           (t.rate_per_s > 0 ? num(t.rate_per_s) + " requests/s" : "no rate limit"));
    if (t.rate_per_s <= 0 && std::find(t.roles.begin(), t.roles.end(), "infer") != t.roles.end()) {
      unlimited.push_back(t.id);
    }
  }
  row.evidence.push_back(s.auth ? "authentication on (" + std::to_string(s.tokens.size()) + " tokens)"
                                : "no tokens file: anonymous callers may infer");
  row.evidence.push_back(std::string("TLS ") + (s.tls ? "on" : "off") + "; access log " +
                         (s.access_log ? "on" : "off") + "; event log " + (s.events ? "on" : "off"));
  const std::string tokens =
      "issue tokens with rates (`bulwark token --id NAME --roles infer --rate 10`), list their "
      "entries in a tokens file and set `tokens: FILE` in " +
      s.config_path;
  if (p.serving.require_auth && !s.auth) {
    return set(row, Verdict::kFail, "anyone who reaches the server may query the model (serving.require_auth)", tokens);
  }
  if (p.serving.require_rate_limit && (!s.auth || !unlimited.empty())) {
    std::string ids;
    for (const auto& u : unlimited) ids += (ids.empty() ? "" : ", ") + u;
    return set(row, Verdict::kWarn,
               s.auth ? "tokens with the infer role and no rate limit: " + ids + " (serving.require_rate_limit)"
                      : "no per-client rate limit without tokens (serving.require_rate_limit)",
               tokens);
  }
  if (!s.access_log) {
    return set(row, Verdict::kWarn, "the access log is off: queries leave no telemetry (AML.M0024)",
               "set `access-log: FILE` in " + s.config_path);
  }
  set(row, Verdict::kPass,
      s.auth ? "authenticated, rate-limited access with an access log" : "anonymous access allowed by the policy");
}

void judge_membership(const ThreatEvidence& e, const ThreatPolicy& p, ThreatRow& row) {
  const Names n = names_of(e);
  const std::string audit =
      n.export_cmd() + " && bulwark privacy audit --model " + n.exported_model() + " --registry " + n.registry;
  const std::string with_data = " (with the model's training data: `bulwark privacy audit --help`)";
  if (!e.privacy) {
    return set(row, Verdict::kMissing, "no finished privacy-audit run for this model file",
               "`" + audit + "`" + with_data);
  }
  const auto& m = e.privacy->metrics;
  row.evidence.push_back(run_line(e.privacy->run));
  const auto get = [&m](const std::string& k) -> std::optional<double> {
    const auto it = m.find(k);
    return it == m.end() ? std::nullopt : std::optional<double>(it->second);
  };
  struct Limit {
    const char* metric;
    const char* policy_key;
    double max;
  };
  const Limit limits[] = {{"auc", "privacy.max_auc", p.privacy.max_auc},
                          {"tpr_at_0_1pct_fpr", "privacy.max_tpr_at_0_1pct_fpr", p.privacy.max_tpr_at_0_1pct_fpr},
                          {"tpr_at_1pct_fpr", "privacy.max_tpr_at_1pct_fpr", p.privacy.max_tpr_at_1pct_fpr}};
  for (const char* attack : {"loss", "lira"}) {
    std::string line;
    for (const auto& l : limits) {
      const auto v = get(std::string(attack) + "." + l.metric);
      if (v)
        line += (line.empty() ? "" : ", ") + std::string(l.metric) + " " +
                (std::string(l.metric) == "auc" ? num(*v) : pct(*v));
    }
    if (!line.empty())
      row.evidence.push_back(std::string(attack == std::string("lira") ? "LiRA" : "loss threshold") + ": " + line);
  }
  const std::string reduce =
      "the model leaks membership: train with more data or stronger regularisation (fewer epochs, "
      "weight decay, augmentation), keep scores out of answers, then audit again: `" +
      audit + "`";
  bool any = false;
  for (const auto& l : limits) {
    for (const char* attack : {"lira", "loss"}) {
      const auto v = get(std::string(attack) + "." + l.metric);
      if (!v) continue;
      any = true;
      if (*v > l.max) {
        return set(
            row, Verdict::kFail,
            std::string(attack) + "." + l.metric + " = " + num(*v) + " is above " + l.policy_key + " = " + num(l.max),
            reduce);
      }
    }
  }
  if (!any) {
    return set(row, Verdict::kMissing, "the privacy-audit run recorded none of its metrics",
               "`" + audit + "`" + with_data);
  }
  if (!get("lira.auc") && !get("lira.tpr_at_0_1pct_fpr")) {
    return set(row, Verdict::kWarn, "only the loss-threshold attack was run; LiRA is the stronger test at low FPR",
               "`" + audit + "` with shadow models (`--shadows N`)");
  }
  set(row, Verdict::kPass, "membership inference stays within the privacy thresholds");
}

}  // namespace

const std::vector<RowSpec>& row_specs() {
  static const std::vector<RowSpec> specs{
      {"integrity",
       "AML.T0010",
       {"AML.M0014", "AML.M0013"},
       "The version's OMS signature and every stored object's SHA-256 (registry verify), the audit log's hash "
       "chain and signed checkpoint (audit verify), and the version's registration in that log.",
       judge_integrity},
      {"provenance",
       "AML.T0010.002",
       {"AML.M0025", "AML.M0014"},
       "The version's lineage names its training data and the data's SHA-256.",
       judge_provenance},
      {"poisoning",
       "AML.T0020",
       {"AML.M0007", "AML.M0025"},
       "The newest poison-scan run on this model file (spectral signatures and activation clustering on the "
       "training set).",
       judge_poison},
      {"robustness",
       "AML.T0043",
       {"AML.M0003", "AML.M0008"},
       "Robust accuracy of this model file under the newest attack run, judged by the worst attack at the judged "
       "eps; the loop gate's figures at registration.",
       judge_robustness},
      {"query-crafting",
       "AML.T0043",
       {"AML.M0004", "AML.M0015"},
       "Black-box crafting sends many near-duplicate queries: the server's per-client stateful detector "
       "(serve --stateful).",
       judge_query_crafting},
      {"detection",
       "AML.T0015",
       {"AML.M0015"},
       "The served detector flag's TPR at its calibrated threshold (newest detect-evaluate run), and whether the "
       "server runs a calibrated detector for this model.",
       judge_detection},
      {"access",
       "AML.T0024",
       {"AML.M0019", "AML.M0004", "AML.M0024"},
       "Who may query the served model: tokens (serve --tokens), per-token rate limits, TLS, access and event logs.",
       judge_access},
      {"membership",
       "AML.T0024.000",
       {"AML.M0024", "AML.M0004"},
       "Membership inference on this model file (newest privacy-audit run): AUC and TPR at 0.1 % and 1 % FPR of "
       "the loss-threshold attack and LiRA.",
       judge_membership},
      {"extraction",
       "AML.T0024.002",
       {"AML.M0004", "AML.M0024"},
       "The server's per-client extraction detector (serve --extraction: query distance distributions, PRADA).",
       judge_extraction},
  };
  return specs;
}

}  // namespace bulwark::report::detail
