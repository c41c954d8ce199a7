// control/controller.h — the closed loop: a state machine driven by the monitor's events and the
// policy,
//
//   serving → alarm → hardening → gating → promoting → watching → stable | rolled-back | held
//                 ↘ serving (alarm cleared)   ↘ failed (job or gate)    (then, after the cooldown, serving)
//
// serving: waiting for an alarm of a trigger statistic on the served model, or, after a cooldown,
// for one still standing (an attack that outlasted a refused gate is answered again). alarm: the
// alarm must persist `trigger.persistence_s`; a traffic alarm then needs evidence from
// `trigger.min_clients` identities, and the day's job budget must not be spent (policy.h). hardening: a job (runner.h) fine-tunes the production version
// adversarially. gating: the candidate gets its own detector calibration, then the gate (gate.h)
// compares it with production. promoting: the candidate is registered (signed) and promoted; the
// server, following the production stage, verifies and swaps it in. watching: labelled feedback
// on the new version's own answers is compared with the replaced version's (before the alarm, or
// under the attack while it goes on); worse → rollback, given labels from watch.min_labellers
// tokens; too few labels, or a rollback only one labeller asks for → held, until an admin decides
// (decide()). Failures in a row double the cooldown (up to max_cooldown_s). In Kubernetes mode
// with an InferenceService (kubernetes.h), promotion also pins it to the candidate at the canary
// share, stable moves it to 100 %, and a rollback pins it back to the previous version at 100 %;
// each apply is an audit entry ("guard.inferenceservice"). At most one job
// at a time; every transition is an audit entry, an event ("guard.state") and a metric; the state
// is persisted (write, fsync, rename) so a restarted guard resumes or cleanly abandons the job.
//
// Thread-safety: start(), stop(), status(), request_hardening() may be called from any thread; the
// loop runs on the controller's own thread; event callbacks only enqueue.
#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <future>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include <nlohmann/json.hpp>

#include "control/gate.h"
#include "control/policy.h"
#include "control/runner.h"
#include "core/cancel.h"
#include "detect/events.h"

namespace bulwark::serve {
class InferenceCore;
}
namespace bulwark::registry {
class Registry;
}

namespace bulwark::control {

class InferenceServicePromoter;

enum class State {
  kServing,
  kAlarm,
  kHardening,
  kGating,
  kPromoting,
  kWatching,
  kStable,
  kRolledBack,
  kFailed,
  kHeld
};
std::string to_string(State s);
State parse_state(const std::string& s);  // throws data_format naming it

struct ControllerOptions {
  std::string registry_dir;
  // The server's trust roots (--trust-keys, --log-key): the guard follows the same signed stage
  // statements the server does. Empty: the registry's own (tests of the loop alone).
  std::string trust_keys, log_key;
  std::string model;        // the registry model
  std::string served_name;  // the name clients use
  std::string state_file;   // default <registry>/guard/<model>.state.json
  std::string work_dir;     // default <registry>/guard/jobs
  std::string bulwark_binary = "/proc/self/exe";
  double tick_s = 0.1;
  double promote_deadline_s = 30;  // for the server to swap the promoted version in
};

class Controller {
 public:
  Controller(ControllerOptions options, Policy policy, serve::InferenceCore& core);
  ~Controller();

  // Recovers the persisted state (a half-done job is abandoned; a promotion that happened is
  // watched), subscribes to the events, starts the loop.
  void start();
  // Returns within a second from every state: the loop thread never blocks on a long step (the
  // gate runs on a worker; kubectl calls and the worker read the stop flag), a running job or gate
  // is cancelled (a job past kStopDeadlineS is killed), its files removed, and the state becomes
  // failed ("guard stopped during hardening"). Other states are left as persisted. In Kubernetes
  // mode the Job's deletion is a kubectl call bounded by policy.kubernetes.timeout_s.
  void stop();
  // How long stop() waits for a hardening job, and for the gate worker, to reach a cancellation
  // point (a batch, an attack iteration); a job past it is killed, the worker left to the destructor.
  static constexpr double kStopDeadlineS = 0.4;

  nlohmann::json status() const;
  State state() const;
  // Hardening now, as if a trigger alarm had persisted (POST /v2/guard/harden). Refused, with the
  // reason, unless the controller is serving, in alarm (the evidence rule and the job budget do not
  // hold back an admin), or in stable/failed/rolled-back (the cooldown is skipped).
  nlohmann::json request_hardening(const std::string& actor);
  // An admin's decision on a held candidate (POST /v2/guard/decide): "keep" (full traffic, stable)
  // or "rollback". Refused unless the controller is held.
  nlohmann::json decide(const std::string& actor, const std::string& decision);

  // What the gate worker hands the loop: the gate's verdict and the candidate's files.
  struct GateOutcome {
    GateResult gate;
    std::string candidate_path, calibration_path;
  };

 private:
  struct Persisted;
  void loop();
  void tick(const std::vector<detect::Event>& events);
  void transition(State to, const std::string& reason, nlohmann::json details = nlohmann::json::object());
  // Writes the state file with `state` (the one being entered) and the other fields as they are.
  void persist(State state, double since_s, const std::string& reason);
  void recover();
  void start_hardening(const std::string& reason);
  // Gating: the first call reads production (and its lineage's first version) from the registry
  // and starts the worker (calibration, gate); later calls return at once until it is done, then
  // register, sign and promote a passed candidate on the loop thread (short steps).
  void start_gate();
  void poll_gate();
  void finish_promotion();
  void judge_watch(const std::vector<detect::Event>& events);
  void hold(const std::string& reason, nlohmann::json details);
  // Serving or alarm: whether a trigger statistic of the served model is in alarm now.
  bool alarm_standing() const;
  // Whether the attack looks to be going on: suspicious identities, or a traffic statistic crossing
  // its threshold within the monitor's window.
  bool attack_ongoing(double now) const;
  // Alarm persisted: starts the job, or says what it waits for (evidence, budget).
  void maybe_start_from_alarm(double now, double since);
  double cooldown_now() const;  // cooldown_s doubled per failure in a row, capped
  void rollback(const std::string& reason);
  void route_traffic(int64_t version, int64_t percent, const std::string& step);
  void abandon_job(double deadline_s = 10);

  const ControllerOptions options_;
  const Policy policy_;
  serve::InferenceCore& core_;
  std::unique_ptr<registry::Registry> registry_;  // loop thread only (after start)
  std::unique_ptr<InferenceServicePromoter> isvc_;  // Kubernetes mode with an InferenceService; loop thread only

  mutable std::mutex mu_;  // guards everything below up to the thread
  State state_ = State::kServing;
  double since_s_ = 0;
  std::string reason_;
  std::string alarm_detector_;
  std::string job_id_, job_dir_;
  double job_started_s_ = 0;
  std::string job_progress_;
  int64_t production_version_ = 0, candidate_version_ = 0;
  double alarm_s_ = 0;        // when the episode began (alarm raised, or hardening requested)
  double promoted_s_ = 0;     // when the candidate began serving
  std::string replaced_serve_version_, candidate_serve_version_;  // the server's version strings (the ledger's keys)
  int64_t failure_streak_ = 0;       // failed, refused, rolled-back or held-then-rolled-back jobs in a row
  std::deque<double> job_starts_;    // jobs started in the last 24 h
  std::string waiting_for_;          // in alarm: what the job waits for (evidence, budget), once per episode
  nlohmann::json watch_ = nullptr;   // the watch's numbers: references, candidate, labels, verdict
  std::string decision_, decision_actor_;  // a pending decide()
  nlohmann::json last_gate_ = nullptr;
  std::deque<nlohmann::json> history_;  // the last 50 transitions
  std::string manual_request_;          // actor of a pending request_hardening
  std::deque<detect::Event> inbox_;     // bounded: events arrive faster than a gate runs
  bool stop_ = false;
  std::condition_variable cv_;

  std::unique_ptr<JobRunner> runner_;  // loop thread only
  std::future<GateOutcome> gate_work_;  // the gate worker; loop thread only (and stop(), after the join)
  std::future<GateOutcome> stopped_gate_;  // a cancelled worker stop() did not wait for; the destructor does
  // Set by stop(): read by the gate worker and by kubectl calls on the loop thread.
  std::shared_ptr<std::atomic<bool>> cancel_ = std::make_shared<std::atomic<bool>>(false);
  int subscription_ = 0;
  std::thread thread_;
};

}  // namespace bulwark::control
