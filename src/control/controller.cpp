#include "control/controller.h"

#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <iostream>
#include <optional>

#include "control/gate.h"
#include "control/kubernetes.h"
#include "core/digest.h"
#include "core/error.h"
#include "core/files.h"
#include "data/classes.h"
#include "data/dataset.h"
#include "detect/calibration.h"
#include "detect/monitor_fit.h"
#include "model/model.h"
#include "registry/location.h"
#include "registry/registry.h"
#include "serve/core.h"
#include "control/detail/controller_util.h"

namespace bulwark::control {
namespace fs = std::filesystem;
using nlohmann::json;
using detail::now_s;
using detail::secs;

namespace {

constexpr size_t kInboxCap = 10000;
constexpr size_t kHistory = 50;
const State kAllStates[] = {State::kServing,  State::kAlarm,  State::kHardening,  State::kGating, State::kPromoting,
                            State::kWatching, State::kStable, State::kRolledBack, State::kFailed, State::kHeld};
constexpr double kDay = 86400;
constexpr double kEvidenceRows = 5;  // flagged rows an identity needs to count as evidence

bool contains(const std::vector<std::string>& v, const std::string& x) {
  return std::find(v.begin(), v.end(), x) != v.end();
}

}  // namespace

std::string to_string(State s) {
  switch (s) {
    case State::kServing: return "serving";
    case State::kAlarm: return "alarm";
    case State::kHardening: return "hardening";
    case State::kGating: return "gating";
    case State::kPromoting: return "promoting";
    case State::kWatching: return "watching";
    case State::kStable: return "stable";
    case State::kRolledBack: return "rolled-back";
    case State::kFailed: return "failed";
    case State::kHeld: return "held";
  }
  return "serving";
}

State parse_state(const std::string& s) {
  for (const auto st : kAllStates) {
    if (to_string(st) == s) return st;
  }
  throw data_format("unknown controller state '" + s + "'");
}

Controller::Controller(ControllerOptions options, Policy policy, serve::InferenceCore& core)
    : options_([&options] {
        // The guard's files live in the registry's directory — for PostgreSQL its shared `dir`.
        const auto dir = registry::parse_location(options.registry_dir).dir;
        if (options.state_file.empty()) options.state_file = dir + "/guard/" + options.model + ".state.json";
        if (options.work_dir.empty()) options.work_dir = dir + "/guard/jobs";
        return options;
      }()),
      policy_(std::move(policy)),
      core_(core) {
  policy_.validate();
  registry::check_model_name(options_.model);
  fs::create_directories(fs::path(options_.state_file).parent_path());
  fs::create_directories(options_.work_dir);
  registry::SigningKey::load(policy_.hardening.key);  // a bad key fails now, not after an hour of hardening
  if (policy_.hardening.runner == "kubernetes") {
    check_kubernetes_setup(policy_, options_.model);  // templates, variables and kubectl: now too
    if (!policy_.kubernetes.inference_service.empty()) {
      isvc_ = std::make_unique<InferenceServicePromoter>(policy_.kubernetes, options_.model, cancel_);
    }
  }
  registry_ = std::make_unique<registry::Registry>(options_.registry_dir, "guard");
  if (!options_.trust_keys.empty()) {
    registry_->pin_trust(registry::load_trust_roots(options_.trust_keys),
                         options_.log_key.empty() ? "" : read_file(options_.log_key));
  }
  // The guard's promotions and rollbacks are stage statements signed with its hardening key.
  registry_->set_operator_key(
      std::make_shared<const registry::SigningKey>(registry::SigningKey::load(policy_.hardening.key)));
}

Controller::~Controller() {
  stop();
  if (stopped_gate_.valid()) stopped_gate_.wait();
}

State Controller::state() const {
  std::lock_guard<std::mutex> lock(mu_);
  return state_;
}

void Controller::start() {
  cancel_->store(false);
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = false;
  }
  recover();
  subscription_ = core_.guard().events().subscribe([this](const detect::Event& e) {
    if (e.kind.rfind("guard.", 0) == 0) return;  // our own
    std::lock_guard<std::mutex> lock(mu_);
    if (inbox_.size() >= kInboxCap) inbox_.pop_front();
    inbox_.push_back(e);
    cv_.notify_all();
  });
  thread_ = std::thread([this] { loop(); });
}

void Controller::stop() {
  if (!thread_.joinable()) return;
  core_.guard().events().unsubscribe(subscription_);
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cancel_->store(true);
  cv_.notify_all();
  thread_.join();
  // The gate worker stops within an attack iteration or a calibration chunk; what it was doing is
  // dropped with the job. One still loading its data past the deadline is waited for by the
  // destructor, not here (its writes into the removed job directory fail harmlessly).
  if (gate_work_.valid()) {
    if (gate_work_.wait_for(std::chrono::duration<double>(kStopDeadlineS)) != std::future_status::ready) {
      stopped_gate_ = std::move(gate_work_);
    }
    gate_work_ = {};
  }
  // A clean stop leaves no job half-done: cancelled, its files removed, the state says so.
  if (state() == State::kHardening || state() == State::kGating) {
    abandon_job(kStopDeadlineS);
    transition(State::kFailed, "guard stopped during " + to_string(state()) + ": job " + job_id_ + " cancelled");
  }
}

void Controller::loop() {
  for (;;) {
    std::vector<detect::Event> events;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait_for(lock, std::chrono::duration<double>(options_.tick_s), [this] { return stop_; });
      if (stop_) return;
      events.assign(inbox_.begin(), inbox_.end());
      inbox_.clear();
    }
    try {
      tick(events);
    } catch (const std::exception& e) {
      if (cancel_->load()) return;  // stop() cancelled the step (Cancelled), and settles the state
      // A failed step fails the loop's current job, never the server.
      std::cerr << "bulwark guard: " << e.what() << '\n';
      abandon_job();
      transition(State::kFailed, std::string("error: ") + e.what());
    }
  }
}

void Controller::tick(const std::vector<detect::Event>& events) {
  State st;
  double since;
  std::string manual, decision, decision_actor;
  {
    std::lock_guard<std::mutex> lock(mu_);
    st = state_;
    since = since_s_;
    manual.swap(manual_request_);
    decision.swap(decision_);
    decision_actor.swap(decision_actor_);
  }
  const double now = now_s();
  switch (st) {
    case State::kServing: {
      if (!manual.empty()) return start_hardening("requested by " + manual);
      for (const auto& e : events) {
        if (e.kind == "alarm" && e.model == options_.served_name && contains(policy_.trigger.alarms, e.detector)) {
          {
            std::lock_guard<std::mutex> lock(mu_);
            alarm_detector_ = e.detector;
            alarm_s_ = e.time_s;
            waiting_for_.clear();
          }
          char buf[160];
          std::snprintf(buf, sizeof buf, "%s alarm: statistic %.3g over threshold %.3g", e.detector.c_str(), e.statistic,
                        e.threshold);
          return transition(State::kAlarm, buf, {{"detector", e.detector}, {"statistic", e.statistic}});
        }
      }
      // An alarm that outlasted the last job (a refused gate, a failed job, the cooldown) raises no
      // new event: the episode goes on, and so does the loop.
      if (alarm_standing()) {
        {
          std::lock_guard<std::mutex> lock(mu_);
          alarm_s_ = now;
          waiting_for_.clear();
        }
        return transition(State::kAlarm, "alarm still standing after the cooldown: evaluating again");
      }
      return;
    }
    case State::kAlarm: {
      if (!manual.empty()) return start_hardening("requested by " + manual + " during the alarm");
      bool cleared = false;
      for (const auto& e : events) {
        cleared = cleared || (e.kind == "alarm.cleared" && e.model == options_.served_name && e.detector == alarm_detector_);
      }
      if (cleared || !alarm_standing()) {
        return transition(State::kServing, "alarm cleared after " + secs(now - since) +
                                               (now - since < policy_.trigger.persistence_s ? ", before the persistence of " + secs(policy_.trigger.persistence_s) : ""));
      }
      if (now - since >= policy_.trigger.persistence_s) maybe_start_from_alarm(now, since);
      return;
    }
    case State::kHardening: {
      const auto js = runner_->poll();
      {
        std::lock_guard<std::mutex> lock(mu_);
        job_progress_ = js.progress;
      }
      if (js.phase == JobStatus::Phase::kSucceeded) {
        transition(State::kGating, "hardening job done", {{"job", job_id_}, {"result", js.result}});
        return poll_gate();
      }
      if (js.done()) {
        abandon_job();
        return transition(State::kFailed, "hardening job " + to_string(js.phase) + ": " + js.error);
      }
      const double limit_s = policy_.hardening.budget_minutes * 60 + 300;  // the budget, plus loading and saving
      if (now - job_started_s_ > limit_s) {
        runner_->cancel(10);
        abandon_job();
        return transition(State::kFailed, "hardening job ran past its budget plus 300 s: cancelled");
      }
      return;
    }
    case State::kGating:
      return poll_gate();
    case State::kPromoting:
      return finish_promotion();
    case State::kWatching:
      return judge_watch(events);
    case State::kHeld: {
      if (decision.empty()) return;
      int64_t candidate;
      {
        std::lock_guard<std::mutex> lock(mu_);
        candidate = candidate_version_;
      }
      if (decision == "rollback") return rollback("rolled back by " + decision_actor + " (held candidate)");
      route_traffic(candidate, 100, "full");
      return transition(State::kStable, "kept by " + decision_actor + " (held candidate)");
    }
    case State::kStable:
    case State::kRolledBack:
    case State::kFailed: {
      if (!manual.empty()) return start_hardening("requested by " + manual + " (cooldown skipped)");
      const double cooldown = cooldown_now();
      if (now - since >= cooldown) transition(State::kServing, "cooldown of " + secs(cooldown) + " over");
      return;
    }
  }
}

bool Controller::alarm_standing() const {
  const auto snapshot = core_.guard().monitor_snapshot(options_.served_name, now_s());
  if (!snapshot) return false;
  for (const auto& d : snapshot->detectors) {
    if (d.in_alarm && contains(policy_.trigger.alarms, d.name)) return true;
  }
  return false;
}

bool Controller::attack_ongoing(double now) const {
  const double window = core_.guard().options().monitor_options.window_s();
  for (const char* statistic : {"detector_rate", "confidence"}) {
    if (core_.guard().suspicious_identities(options_.served_name, statistic, now - window,
                                            policy_.trigger.min_client_flag_share, kEvidenceRows) > 0) {
      return true;
    }
  }
  const auto snapshot = core_.guard().monitor_snapshot(options_.served_name, now);
  if (!snapshot) return false;
  for (const auto& d : snapshot->detectors) {
    if (d.name == "accuracy") continue;  // labels, not traffic
    if (d.in_alarm || now - d.last_cross_s < window) return true;
  }
  return false;
}

void Controller::maybe_start_from_alarm(double now, double since) {
  std::string detector, waiting;
  int64_t jobs_today;
  {
    std::lock_guard<std::mutex> lock(mu_);
    detector = alarm_detector_;
    while (!job_starts_.empty() && job_starts_.front() < now - kDay) job_starts_.pop_front();
    jobs_today = static_cast<int64_t>(job_starts_.size());
  }
  if (detector != "accuracy") {
    const double window = core_.guard().options().monitor_options.window_s();
    const int64_t identities = core_.guard().suspicious_identities(
        options_.served_name, detector, now - window, policy_.trigger.min_client_flag_share, kEvidenceRows);
    if (identities < policy_.trigger.min_clients) {
      waiting = "evidence: " + std::to_string(identities) + " of the " + std::to_string(policy_.trigger.min_clients) +
                " identities a " + detector + " alarm needs (trigger.min_clients) sent such inputs in the last " +
                secs(window);
    }
  }
  if (waiting.empty() && jobs_today >= policy_.trigger.max_jobs_per_day) {
    waiting = "the job budget: " + std::to_string(jobs_today) + " jobs started in the last 24 h (trigger.max_jobs_per_day " +
              std::to_string(policy_.trigger.max_jobs_per_day) + ")";
  }
  if (waiting.empty()) return start_hardening("alarm persisted " + secs(now - since));
  bool first;
  {
    std::lock_guard<std::mutex> lock(mu_);
    first = waiting_for_ != waiting.substr(0, waiting.find(':'));
    waiting_for_ = waiting.substr(0, waiting.find(':'));
    reason_ = "alarm persisted " + secs(now - since) + "; waiting for " + waiting;
  }
  if (first) {
    const json details{{"waiting_for", waiting}};
    registry_->record("guard.waiting", options_.model, details);
    core_.guard().events().publish(detect::Event{now, "guard.waiting", "", options_.served_name, "", "", 0, 0, 0, details});
  }
}

double Controller::cooldown_now() const {
  int64_t streak;
  {
    std::lock_guard<std::mutex> lock(mu_);
    streak = failure_streak_;
  }
  double c = policy_.cooldown_s;
  for (int64_t i = 0; i < streak && c < policy_.max_cooldown_s; ++i) c *= 2;
  return std::min(c, policy_.max_cooldown_s);
}

void Controller::start_hardening(const std::string& reason) {
  const auto production = registry_->resolve_signed(options_.model, registry::Stage::kProduction);
  const auto files = registry_->read_verified(production);
  HardenJob job;
  job.id = "job-" + std::to_string(static_cast<int64_t>(now_s()));
  job.dir = options_.work_dir + "/" + job.id;
  fs::create_directories(job.dir);
  // The job starts from its own copy of the verified bytes, not from the object store's file, which
  // could change between the check and the job's read.
  job.base_model = job.dir + "/base.pt";
  atomic_write_file(job.base_model, files.at("model.pt"));
  job.out = job.dir + "/candidate.pt";
  job.policy = policy_.hardening;
  const auto served = core_.source_of(options_.served_name);
  {
    std::lock_guard<std::mutex> lock(mu_);
    job_id_ = job.id;
    job_dir_ = job.dir;
    job_started_s_ = now_s();
    production_version_ = production.version;
    candidate_version_ = 0;
    job_progress_ = "starting";
    job_starts_.push_back(job_started_s_);
    if (state_ != State::kAlarm) alarm_s_ = job_started_s_;  // a requested job: the episode starts now
    replaced_serve_version_ = served ? served->serve_version : "";
    candidate_serve_version_.clear();
    watch_ = nullptr;
  }
  runner_ = make_runner(policy_.hardening.runner, options_.bulwark_binary, policy_.kubernetes);
  transition(State::kHardening, reason,
             {{"job", job.id}, {"from_version", production.version}, {"method", policy_.hardening.method},
              {"eps", policy_.hardening.eps}, {"runner", policy_.hardening.runner}});
  runner_->start(job);
}

void Controller::transition(State to, const std::string& reason, json details) {
  State from;
  std::string served_version;
  if (const auto src = core_.source_of(options_.served_name)) served_version = std::to_string(src->registry_version);
  // On disk before anyone can see it: a guard killed in between restarts from the state it was
  // entering (a job it then abandons), never from the one it left while /v2/guard already showed
  // the new one.
  const double since = now_s();
  persist(to, since, reason);
  {
    std::lock_guard<std::mutex> lock(mu_);
    from = state_;
    state_ = to;
    since_s_ = since;
    if (to == State::kStable) failure_streak_ = 0;
    if (to == State::kFailed || to == State::kRolledBack) ++failure_streak_;
    reason_ = reason;
    details["from"] = to_string(from);
    details["to"] = to_string(to);
    details["reason"] = reason;
    details["time_s"] = since_s_;
    history_.push_back(details);
    if (history_.size() > kHistory) history_.pop_front();
  }
  registry_->record("guard.transition", options_.model, details);
  core_.guard().events().publish(
      detect::Event{now_s(), "guard.state", "", options_.served_name, served_version, "", 0, 0, 0, details});
  for (const auto s : kAllStates) {
    core_.metrics().gauge("bulwark_guard_state", {{"model", options_.served_name}, {"state", to_string(s)}}, s == to ? 1 : 0);
  }
  core_.metrics().counter("bulwark_guard_transitions_total", {{"model", options_.served_name}, {"state", to_string(to)}});
  std::cerr << "bulwark guard: " << to_string(from) << " -> " << to_string(to) << ": " << reason << '\n';
}

void Controller::persist(State state, double since_s, const std::string& reason) {
  json j;
  {
    std::lock_guard<std::mutex> lock(mu_);
    j = {{"model", options_.model},       {"state", to_string(state)},
         {"since_s", since_s},            {"reason", reason},
         {"job", {{"id", job_id_}, {"dir", job_dir_}}},
         {"production_version", production_version_}, {"candidate_version", candidate_version_},
         {"alarm_s", alarm_s_}, {"promoted_s", promoted_s_},
         {"failure_streak", failure_streak_ + ((state == State::kFailed || state == State::kRolledBack) ? 1 : 0)},
         {"job_starts", std::vector<double>(job_starts_.begin(), job_starts_.end())}};
  }
  atomic_write_file(options_.state_file, j.dump(2));
}

void Controller::recover() {
  for (const auto s : kAllStates) {
    core_.metrics().gauge("bulwark_guard_state", {{"model", options_.served_name}, {"state", to_string(s)}},
                          s == State::kServing ? 1 : 0);
  }
  if (!file_exists(options_.state_file)) {
    std::lock_guard<std::mutex> lock(mu_);
    since_s_ = now_s();
    return;
  }
  const auto j = json::parse(read_file(options_.state_file), nullptr, false);
  if (j.is_discarded() || !j.is_object()) throw data_format(options_.state_file + ": not a controller state file");
  const State saved = parse_state(j.value("state", "serving"));
  {
    std::lock_guard<std::mutex> lock(mu_);
    state_ = saved;
    since_s_ = j.value("since_s", now_s());
    reason_ = j.value("reason", "");
    job_id_ = j["job"].value("id", "");
    job_dir_ = j["job"].value("dir", "");
    production_version_ = j.value("production_version", int64_t{0});
    candidate_version_ = j.value("candidate_version", int64_t{0});
    alarm_s_ = j.value("alarm_s", 0.0);
    promoted_s_ = j.value("promoted_s", 0.0);
    // As saved, the streak includes the failure the saved state entered (persist() counts it).
    failure_streak_ = j.value("failure_streak", int64_t{0});
    if (j.contains("job_starts") && j["job_starts"].is_array()) {
      for (const auto& t : j["job_starts"]) {
        if (t.is_number()) job_starts_.push_back(t.get<double>());
      }
    }
  }
  int64_t production = 0;
  try {
    production = registry_->resolve_signed(options_.model, registry::Stage::kProduction).version;
  } catch (const Error&) {
  }
  switch (saved) {
    case State::kAlarm:
      return transition(State::kServing, "guard restarted during an alarm: waiting for the next one");
    case State::kHardening:
    case State::kGating:
      abandon_job();
      return transition(State::kFailed, "guard restarted during " + to_string(saved) + ": job " + job_id_ + " abandoned");
    case State::kPromoting:
      if (candidate_version_ > 0 && production == candidate_version_) {
        return transition(State::kHeld, "guard restarted after promoting version " + std::to_string(production) +
                                            ": no labels to judge it on; held until an admin decides");
      }
      abandon_job();
      return transition(State::kFailed, "guard restarted before version " + std::to_string(candidate_version_) +
                                            " reached production: not promoted");
    case State::kWatching:
      if (production != candidate_version_) {
        return transition(State::kFailed, "guard restarted while watching version " + std::to_string(candidate_version_) +
                                              ", which is no longer in production");
      }
      return transition(State::kHeld, "guard restarted while watching version " + std::to_string(production) +
                                          ": the labels it was judged on were in memory; held until an admin decides");
    default:
      return;  // serving, stable, rolled-back, failed: the cooldown goes on from the saved time
  }
}

json Controller::status() const {
  std::lock_guard<std::mutex> lock(mu_);
  json j{{"model", options_.model},
         {"state", to_string(state_)},
         {"since_s", since_s_},
         {"reason", reason_},
         {"production_version", production_version_},
         {"candidate_version", candidate_version_},
         {"policy", policy_.to_json()},
         {"history", json(std::vector<json>(history_.begin(), history_.end()))},
         {"last_gate", last_gate_}};
  if (state_ == State::kHardening) j["job"] = {{"id", job_id_}, {"progress", job_progress_}, {"started_s", job_started_s_}};
  j["watch"] = watch_;
  j["failure_streak"] = failure_streak_;
  j["jobs_last_24h"] = job_starts_.size();
  j["alarm_s"] = alarm_s_;
  return j;
}

json Controller::request_hardening(const std::string& actor) {
  std::lock_guard<std::mutex> lock(mu_);
  // In alarm too: an operator may start the job the evidence rule or the budget holds back.
  const bool idle = state_ == State::kServing || state_ == State::kAlarm || state_ == State::kStable ||
                    state_ == State::kFailed || state_ == State::kRolledBack;
  if (!idle) {
    throw Error(ErrorKind::kUnavailable, "the controller is " + to_string(state_) + ": one job at a time");
  }
  manual_request_ = actor;
  cv_.notify_all();
  return {{"accepted", true}, {"state", to_string(state_)}};
}

json Controller::decide(const std::string& actor, const std::string& decision) {
  if (decision != "keep" && decision != "rollback") throw invalid_argument("decision must be keep or rollback");
  std::lock_guard<std::mutex> lock(mu_);
  if (state_ != State::kHeld) {
    throw Error(ErrorKind::kUnavailable, "the controller is " + to_string(state_) + ": only a held candidate awaits a decision");
  }
  decision_ = decision;
  decision_actor_ = actor;
  cv_.notify_all();
  return {{"accepted", true}, {"decision", decision}, {"version", candidate_version_}};
}

}  // namespace bulwark::control
