// control/runner.h — where a hardening job runs: in a thread of the guard process (default); as a
// `bulwark harden` child process whose log is read back for progress and which can be cancelled
// with a deadline (SIGTERM, then SIGKILL); or as a Kubeflow TrainJob / PyTorchJob that runs the
// same command line in the cluster, followed through its conditions and cancelled with
// `kubectl delete` (kubernetes.h).
//
// Thread-safety: a runner is driven by one thread (the controller's); poll() never blocks.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "control/policy.h"

namespace bulwark::control {

struct HardenJob {
  std::string id;          // "job-<unix seconds>"
  std::string dir;         // the job's own directory (log, result, candidate)
  std::string base_model;  // the production version's verified model file
  std::string out;         // where the candidate is written (write, then rename)
  HardeningPolicy policy;
};

struct JobStatus {
  enum class Phase { kRunning, kSucceeded, kFailed, kCancelled };
  Phase phase = Phase::kRunning;
  std::string error;     // why it failed
  std::string progress;  // the job's latest progress line, for /v2/guard
  nlohmann::json result = nlohmann::json::object();  // harden's summary when it succeeded
  bool done() const { return phase != Phase::kRunning; }
};
std::string to_string(JobStatus::Phase phase);

class JobRunner {
 public:
  virtual ~JobRunner() = default;
  virtual void start(const HardenJob& job) = 0;
  virtual JobStatus poll() = 0;
  // Asks the job to stop and waits at most `deadline_s` for it; a subprocess still running then is
  // killed. Idempotent; a finished job is left as it is.
  virtual void cancel(double deadline_s) = 0;
};

// The `bulwark harden` arguments (after the program name) for `job`: what the subprocess runner
// executes, and what the Kubernetes runner fills the job template's HARDEN_* variables from.
std::vector<std::string> harden_argv(const HardenJob& job);

// "thread", "subprocess" or "kubernetes"; `bulwark_binary` is what the subprocess runner executes,
// `kubernetes` where the Kubernetes runner submits its jobs.
std::unique_ptr<JobRunner> make_runner(const std::string& kind, const std::string& bulwark_binary,
                                       const KubernetesPolicy& kubernetes = {});

}  // namespace bulwark::control
