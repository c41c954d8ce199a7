// control/kubernetes.h — the guard's Kubernetes mode (`hardening.runner: kubernetes`), and the one
// place the guard talks to a cluster, always through `kubectl` (the pod's service account; RBAC in
// deploy/guard/rbac.yaml):
//
//   Kubectl                   runs kubectl with an argv (fork/exec, no shell), stdin, a timeout and
//                             bounded output;
//   KubernetesRunner          a JobRunner: renders deploy/kubeflow/trainjob.yaml (or
//                             pytorchjob.yaml) with the job's values and `harden_argv`'s, applies
//                             it, follows its status conditions, deletes it to cancel;
//   InferenceServicePromoter  renders deploy/kserve/inferenceservice.yaml pinned to a registry
//                             version with a canary share and applies its InferenceService.
//
// Job progress is the job's latest condition; the pod's log is not read (kubectl logs per poll
// costs an API call and a pod lookup per rank for a progress line).
//
// Thread-safety: Kubectl and InferenceServicePromoter are immutable after construction (any
// thread); a KubernetesRunner is driven by one thread, like every JobRunner.
#pragma once

#include <chrono>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "control/policy.h"
#include "control/runner.h"
#include "core/cancel.h"

namespace bulwark::control {

struct KubectlResult {
  int exit_code = -1;  // -1: killed at the timeout, or not run
  bool timed_out = false;
  std::string out, err;  // each at most Kubectl::kMaxOutputBytes
  std::string command;   // for messages: "kubectl -n NS get trainjob NAME -o json"
  bool ok() const { return exit_code == 0; }
  bool not_found() const;  // the object does not exist (kubectl's NotFound)
  std::string describe() const;  // "<command> exited 1: <stderr's last line>"
};

class Kubectl {
 public:
  static constexpr size_t kMaxOutputBytes = 1 << 20;
  // `binary` is looked up on PATH unless it holds a '/'; throws not_found when it is nowhere.
  // `cancel`: once set, a running kubectl is killed and Cancelled thrown (the guard's stop).
  Kubectl(const std::string& binary, std::string namespace_name, double timeout_s, CancelFlag cancel = nullptr);
  // `kubectl -n NS <args>`, `stdin_text` on its standard input; at most `timeout_s` (0: the
  // default), then the process group is killed.
  KubectlResult run(const std::vector<std::string>& args, const std::string& stdin_text = "", double timeout_s = 0) const;
  const std::string& binary() const { return binary_; }

 private:
  std::string binary_, namespace_;
  double timeout_s_;
  CancelFlag cancel_;
};

// `s` made a valid RFC 1123 label: lower case, other characters '-', at most 63, alphanumeric ends.
std::string dns_label(const std::string& s);

class KubernetesRunner : public JobRunner {
 public:
  explicit KubernetesRunner(KubernetesPolicy policy, double poll_interval_s = 2);
  ~KubernetesRunner() override;
  // Never throws: a job that cannot be rendered or applied is reported failed by poll().
  void start(const HardenJob& job) override;
  JobStatus poll() override;  // asks the cluster at most every poll_interval_s
  // `kubectl delete --wait=false`, then waits (at most the deadline) for the object to disappear.
  void cancel(double deadline_s) override;

  // The manifest start() applies. The template writes JOB_DIR/candidate.pt.tmp, so `job.out` must
  // be JOB_DIR/candidate.pt; values the job's shell line cannot carry are refused.
  std::string render_job(const HardenJob& job) const;
  const std::string& job_name() const { return name_; }

 private:
  void finish(JobStatus::Phase phase, const std::string& error);
  void succeed();

  const KubernetesPolicy policy_;
  const Kubectl kubectl_;
  const double poll_interval_s_;
  HardenJob job_;
  std::string name_, kind_name_;  // the object; "TrainJob" / "PyTorchJob" for messages
  bool started_ = false, finished_ = false;
  std::chrono::steady_clock::time_point last_poll_;
  JobStatus status_;
};

// Promotion through a KServe InferenceService: MODEL_REF pinned to a registry version (every change
// is a new revision, so KServe can split traffic) and CANARY_PERCENT for the newest revision.
class InferenceServicePromoter {
 public:
  // `model`: the registry model (MODEL_NAME); the InferenceService is policy.inference_service.
  InferenceServicePromoter(KubernetesPolicy policy, std::string model, CancelFlag cancel = nullptr);
  // The InferenceService document of the rendered template (its ServiceAccount is not applied:
  // the guard's Role covers the InferenceService only).
  std::string render(int64_t version, int64_t canary_percent) const;
  // Applies it; returns what was applied, for the audit log. Throws unavailable naming kubectl's error.
  nlohmann::json apply(int64_t version, int64_t canary_percent) const;

 private:
  const KubernetesPolicy policy_;
  const std::string model_;
  const Kubectl kubectl_;
};

// Renders the job and InferenceService templates once with stand-in values, so a missing template
// directory, an unknown variable or a missing kubectl fails when the guard starts, not at the first
// alarm. Throws naming the problem.
void check_kubernetes_setup(const Policy& policy, const std::string& model);

}  // namespace bulwark::control
