// report/threat_evidence.h — what a threat report knows about one model version, as plain values:
// the registry's checks (signature, digests, audit chain), lineage, the loop gate's metrics, the
// newest finished run of each kind, and the server's configuration. Gathered elsewhere (the threat
// module reads the registry); the report module only judges and renders it. An absent optional is
// "no evidence", which the verdicts report as missing, never as a pass.
#pragma once

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

namespace bulwark::report {

// A run record the evidence came from: enough to find it again (`bulwark runs show ID`).
struct RunRef {
  std::string run_id, kind, end_time;
  nlohmann::json to_json() const;
};

struct IntegrityEvidence {
  bool is_signed = false;
  std::string key_id;
  bool verified = false;       // Registry::verify: signature (when signed) and every object's digest
  std::string verify_problem;  // why not, when !verified
  bool audit_ok = false;       // the audit log's chain and checkpoint verify
  std::string audit_problem;
  int64_t audit_entries = 0;
  int64_t audit_uncovered = 0;  // newest entries not yet under a signed checkpoint
  // The version's registry.register audit entry: found, and naming the same files and digests.
  bool registered_in_audit = false;
  bool audit_files_match = false;
  nlohmann::json to_json() const;
};

struct LineageEvidence {
  std::string dataset, dataset_sha256, method;
  std::optional<double> eps;
  std::optional<int64_t> parent;
  nlohmann::json to_json() const;
};

// The loop's gate wrote these at registration (VersionRecord::metrics): clean and robust accuracy.
struct GateEvidence {
  std::optional<double> clean, robust;
  nlohmann::json to_json() const;
};

struct AttackResult {
  std::string attack;  // as the run named it ("pgd", "+apgd-t" in a cascade)
  double eps = 0, robust_accuracy = 0;
};

struct AttackEvidence {
  RunRef run;
  std::string norm;
  int64_t n = 0;
  double clean_accuracy = 0;
  std::vector<std::string> attacks;     // the attacks the run used
  std::vector<AttackResult> results;    // per attack and eps
  std::map<double, double> worst_case;  // eps -> robust accuracy, worst over the attacks
  nlohmann::json to_json() const;
};

struct DetectionResult {
  std::string attack;                // the attack the positives came from
  double eps = 0, tpr = 0, fpr = 0;  // the served flag's TPR and FPR at the calibrated threshold
};

struct DetectionEvidence {
  RunRef run;
  double fpr_target = 0;                   // the calibration's target FPR
  std::vector<DetectionResult> results;    // non-adaptive attacks only, one per attack and eps
  std::optional<double> adaptive_evasion;  // worst share of adaptive adversarials that evade the flag
  nlohmann::json to_json() const;
};

struct PrivacyEvidence {
  RunRef run;
  std::map<std::string, double> metrics;  // loss.auc, lira.tpr_at_0_1pct_fpr, ... as the run recorded
  nlohmann::json to_json() const;
};

struct PoisonEvidence {
  RunRef run;
  int64_t suspected = 0, flagged_classes = 0;
  bool failed = false;
  nlohmann::json to_json() const;
};

struct TokenSummary {
  std::string id;  // the token's name, never the token or its hash
  std::vector<std::string> roles;
  double rate_per_s = 0;  // 0 = unlimited
};

struct ServeEvidence {
  std::string config_path;
  std::vector<std::string> served_as;  // serve names whose source is this registry model
  bool auth = false;                   // a tokens file is set: no anonymous access
  std::vector<TokenSummary> tokens;
  bool tls = false;
  std::string stateful = "off", extraction = "off";  // as configured (flag defaults when absent)
  bool calibration = false;                          // a detector calibration reaches the served model
  std::string calibration_source;                    // "model.detect in the version" or "calibration: NAME=FILE"
  bool access_log = true;                            // the access log is not "off"
  bool events = false;                               // an event log is set
  nlohmann::json to_json() const;
};

struct ThreatEvidence {
  std::string registry;   // as given (a password in a URL is masked)
  std::string model;      // "fashion@3"
  std::string requested;  // the reference as asked ("fashion@production")
  std::string stage;
  std::string model_sha256;                  // the version's model.pt digest: how runs are matched to it
  std::map<std::string, std::string> files;  // name -> SHA-256
  IntegrityEvidence integrity;
  LineageEvidence lineage;
  GateEvidence gate;
  std::optional<AttackEvidence> attack;
  std::optional<DetectionEvidence> detection;
  std::optional<PrivacyEvidence> privacy;
  std::optional<PoisonEvidence> poison;
  std::optional<ServeEvidence> serve;
  nlohmann::json to_json() const;
};

}  // namespace bulwark::report
