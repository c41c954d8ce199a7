// control/policy.h — the closed loop's policy, read from YAML (`policy:` in guard.yaml): what
// triggers hardening, how to harden, the gate a candidate must pass, the watch after promotion,
// the cooldown, and where Kubernetes jobs run. Every key is validated when read; errors name the
// key and the limit.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace YAML {
class Node;
}

namespace bulwark::control {

struct TriggerPolicy {
  // Monitor statistics whose alarms start hardening: detector_rate, confidence, class_mix, accuracy.
  std::vector<std::string> alarms{"detector_rate", "confidence", "accuracy"};
  double persistence_s = 1.0;  // the alarm must still stand this long after it was raised
  // A traffic alarm (all but accuracy) starts a job only on evidence from this many identities
  // (tokens; without a token, network prefixes): each with >= min_client_flag_share of its rows,
  // and at least 5 of them, flagged by the detectors within the monitor's window. One client
  // cannot make the loop spend compute. An accuracy alarm rests on labels and needs none.
  int64_t min_clients = 2;
  double min_client_flag_share = 0.15;  // 3x the usual 5 % calibrated false-positive rate
  int64_t max_jobs_per_day = 4;         // jobs an alarm may start in any 24 h (admin requests are not refused)
};

// The defaults are `bulwark harden --preset loop` (defense::harden_presets(), docs/defenses.md): the
// recipe that bought the most robustness in 10 minutes; a test holds them equal.
struct HardeningPolicy {
  std::string method = "fast-at";  // pgd-at | trades | fast-at
  double eps = 0.1;                // L∞, in the model's input range
  int64_t epochs = 40;             // Fast-AT's one-cycle rate follows the clock: the budget ends the job
  int64_t limit = 0;               // training images (0 = the whole training split)
  double budget_minutes = 10;      // the job stops at its best checkpoint when time runs out
  std::string data = "fashion-mnist";
  std::string runner = "thread";   // thread | subprocess | kubernetes (then `kubernetes:` says where)
  std::string key;                 // signing key for the candidate (required)
  int64_t batch = 128;
  int64_t pgd_steps = 7;           // pgd-at / trades inner steps
  double clean_weight = 0;         // pgd-at / fast-at: weight of the clean loss (trades: use beta)
  std::string attack_precision = "fp32";  // the inner attack's gradient passes: fp32 | bf16 (harden --attack-precision)
  uint64_t seed = 0;
  std::vector<std::string> detectors{"max-softmax", "pca"};  // calibrated for the candidate before the gate

  // The held-out share of the (limited) training split: 5 %, but at least 400 images (the
  // candidate's calibration needs >= 200), at most half. The job and the calibration use the same.
  double validation_fraction(int64_t train_size) const;
};

struct GatePolicy {
  int64_t n = 500;                            // held-out test images, from `offset`
  int64_t offset = 0;
  // The attack set (names as in `bulwark attack`): white-box APGD-CE and black-box Square by
  // default; a candidate whose evaluation raises a gradient-masking warning is refused whatever
  // its numbers.
  std::vector<std::string> attacks{"apgd-ce", "square"};
  double eps = 0.1;
  double max_clean_drop = 0.05;               // candidate clean accuracy >= production's - this
  // ... and >= the first production version's (the root of the lineage) - this: repeated
  // cycles, each within max_clean_drop, cannot ratchet clean accuracy down.
  double max_clean_drop_from_first = 0.10;
  double min_robust_accuracy = 0.4;           // worst case over the attack set
  int64_t pgd_steps = 20;
  // Promote only a model whose training rows (the hardening job's split, by content:
  // poison/digest.h) have a finished `bulwark poison scan --registry` run that flagged nothing; a
  // missing or failed scan refuses the candidate, naming the digest and the command to run.
  bool require_poison_scan = false;
};

// After the swap, the new version is judged on labelled feedback (POST .../feedback) for ITS
// answers since promotion (labels count for the version that answered), against the version it
// replaced: on benign traffic, its accuracy in the window_s before the alarm; while the attack goes
// on, its accuracy between the alarm and the swap. Too few labels: the watch extends up to
// max_window_s, then holds (neither full traffic nor rollback) and says so (event guard.held)
// until an admin decides (POST /v2/guard/decide). A rollback on labels needs them from
// min_labellers feedback tokens, else it holds for an admin too: one labeller cannot undo a version.
struct WatchPolicy {
  double window_s = 60;
  double max_window_s = 0;            // the watch waits this long at most for min_feedback labels (0: 5 x window_s)
  double max_accuracy_drop = 0.05;    // roll back when feedback accuracy falls more than this below the replaced version's
  double min_feedback_accuracy = 0;   // ...or below this floor (0: off)
  int64_t min_feedback = 20;          // labels needed (candidate, and each reference) before a rule applies
  int64_t min_labellers = 2;          // feedback tokens a rollback on labels needs
  bool rollback_on_accuracy_alarm = false;  // the monitor's accuracy alarm on the new version rolls back at once
  double max_window() const { return max_window_s > 0 ? max_window_s : 5 * window_s; }
};

// hardening.runner kubernetes: each job a Kubeflow TrainJob (or PyTorchJob) rendered from the
// templates, and, with an InferenceService named, promotion as a canary share then all traffic.
// The guard and the jobs must mount the registry volume at the same path (the job writes its
// candidate into the job directory the guard names).
struct KubernetesPolicy {
  std::string kubectl = "kubectl";                     // the binary (looked up on PATH)
  std::string namespace_name = "bulwark";              // `namespace`: of the jobs and the InferenceService
  std::string job_kind = "trainjob";                   // trainjob (Kubeflow Trainer) | pytorchjob (Training Operator)
  std::string templates = "/usr/share/bulwark/deploy";  // holds variables.yaml, kubeflow/, kserve/
  std::map<std::string, std::string> variables;        // more template values (IMAGE, REGISTRY_PVC, ...)
  std::string inference_service;                       // ISVC_NAME; empty: promote in the registry only
  int64_t canary_percent = 10;                         // the candidate's share while it is watched
  double timeout_s = 60;                               // for one kubectl call

  std::string job_template() const;  // <templates>/kubeflow/<job_kind>.yaml
  std::string isvc_template() const;  // <templates>/kserve/inferenceservice.yaml
  std::string variables_file() const;  // <templates>/variables.yaml
};

struct Policy {
  TriggerPolicy trigger;
  HardeningPolicy hardening;
  GatePolicy gate;
  WatchPolicy watch;
  KubernetesPolicy kubernetes;
  double cooldown_s = 120;  // after stable, rolled-back or failed, before another job may start
  // Each failed, refused or rolled-back job in a row doubles the cooldown, up to this.
  double max_cooldown_s = 86400;

  // `where` names the source in errors ("guard.yaml: policy"). Unknown keys are errors.
  static Policy from_yaml(const YAML::Node& node, const std::string& where);
  void validate() const;  // throws invalid_argument naming "policy.<section>.<key>"
  nlohmann::json to_json() const;
};

}  // namespace bulwark::control
