#include "control/controller.h"

#include <torch/torch.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <iostream>

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

namespace bulwark::control {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr size_t kInboxCap = 10000;
constexpr size_t kHistory = 50;
const State kAllStates[] = {State::kServing,  State::kAlarm,    State::kHardening,  State::kGating, State::kPromoting,
                            State::kWatching, State::kStable,   State::kRolledBack, State::kFailed};

double now_s() { return serve::unix_now_s(); }

bool contains(const std::vector<std::string>& v, const std::string& x) {
  return std::find(v.begin(), v.end(), x) != v.end();
}

std::string secs(double x) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3g s", x);
  return buf;
}

std::string pct(double x) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f%%", 100 * x);
  return buf;
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
      isvc_ = std::make_unique<InferenceServicePromoter>(policy_.kubernetes, options_.model);
    }
  }
  registry_ = std::make_unique<registry::Registry>(options_.registry_dir, "guard");
}

Controller::~Controller() { stop(); }

State Controller::state() const {
  std::lock_guard<std::mutex> lock(mu_);
  return state_;
}

void Controller::start() {
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
  cv_.notify_all();
  thread_.join();
  // A clean stop leaves no job half-done: cancelled, its files removed, the state says so.
  if (state() == State::kHardening || state() == State::kGating) {
    abandon_job();
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
  std::string manual;
  {
    std::lock_guard<std::mutex> lock(mu_);
    st = state_;
    since = since_s_;
    manual.swap(manual_request_);
  }
  const double now = now_s();
  switch (st) {
    case State::kServing:
      if (!manual.empty()) return start_hardening("requested by " + manual);
      for (const auto& e : events) {
        if (e.kind == "alarm" && e.model == options_.served_name && contains(policy_.trigger.alarms, e.detector)) {
          {
            std::lock_guard<std::mutex> lock(mu_);
            alarm_detector_ = e.detector;
          }
          char buf[160];
          std::snprintf(buf, sizeof buf, "%s alarm: statistic %.3g over threshold %.3g", e.detector.c_str(), e.statistic,
                        e.threshold);
          return transition(State::kAlarm, buf, {{"detector", e.detector}, {"statistic", e.statistic}});
        }
      }
      return;
    case State::kAlarm:
      for (const auto& e : events) {
        if (e.kind == "alarm.cleared" && e.model == options_.served_name && e.detector == alarm_detector_) {
          return transition(State::kServing, "alarm cleared after " + secs(now - since) + ", before the persistence of " +
                                                 secs(policy_.trigger.persistence_s));
        }
      }
      if (now - since >= policy_.trigger.persistence_s) start_hardening("alarm persisted " + secs(now - since));
      return;
    case State::kHardening: {
      const auto js = runner_->poll();
      {
        std::lock_guard<std::mutex> lock(mu_);
        job_progress_ = js.progress;
      }
      if (js.phase == JobStatus::Phase::kSucceeded) {
        transition(State::kGating, "hardening job done", {{"job", job_id_}, {"result", js.result}});
        return gate_and_promote();
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
      return gate_and_promote();  // only after a restart mid-gate would we be here; recover() prevents it
    case State::kPromoting:
      return finish_promotion();
    case State::kWatching:
      return judge_watch(events);
    case State::kStable:
    case State::kRolledBack:
    case State::kFailed:
      if (!manual.empty()) return start_hardening("requested by " + manual + " (cooldown skipped)");
      if (now - since >= policy_.cooldown_s) transition(State::kServing, "cooldown of " + secs(policy_.cooldown_s) + " over");
      return;
  }
}

void Controller::start_hardening(const std::string& reason) {
  const auto production = registry_->resolve(registry::Reference{options_.model, 0, registry::Stage::kProduction});
  const auto files = registry_->verify(production);
  HardenJob job;
  job.id = "job-" + std::to_string(static_cast<int64_t>(now_s()));
  job.dir = options_.work_dir + "/" + job.id;
  fs::create_directories(job.dir);
  job.base_model = files.at("model.pt");
  job.out = job.dir + "/candidate.pt";
  job.policy = policy_.hardening;
  {
    std::lock_guard<std::mutex> lock(mu_);
    job_id_ = job.id;
    job_dir_ = job.dir;
    job_started_s_ = now_s();
    production_version_ = production.version;
    candidate_version_ = 0;
    job_progress_ = "starting";
  }
  runner_ = make_runner(policy_.hardening.runner, options_.bulwark_binary, policy_.kubernetes);
  transition(State::kHardening, reason,
             {{"job", job.id}, {"from_version", production.version}, {"method", policy_.hardening.method},
              {"eps", policy_.hardening.eps}, {"runner", policy_.hardening.runner}});
  runner_->start(job);
}

void Controller::gate_and_promote() {
  std::string job_dir;
  int64_t production_version;
  {
    std::lock_guard<std::mutex> lock(mu_);
    job_dir = job_dir_;
    production_version = production_version_;
  }
  const std::string candidate_path = job_dir + "/candidate.pt";
  auto candidate = model::Model::load(candidate_path);
  const auto production_rec = registry_->resolve(registry::Reference{options_.model, production_version, registry::Stage::kNone});
  auto production = model::Model::load(registry_->verify(production_rec).at("model.pt"));
  candidate.set_training(false);

  // The candidate's own detectors and monitor reference, on the held-out part of the split its
  // job trained on (the production version's calibration is bound to the production model).
  const auto& h = policy_.hardening;
  data::LoadOptions load;
  load.shape = candidate.spec().input_shape;
  load.progress = false;
  auto train = data::load_dataset(h.data, data::Split::kTrain, load);
  if (h.limit > 0 && h.limit < train.size()) train = train.head(h.limit, "policy.hardening.limit");
  const auto split = data::split_train_validation(train, h.validation_fraction(train.size()), h.seed);
  detect::CalibrationOptions co;
  co.detectors = h.detectors;
  co.validate();
  const auto fit = split.train.head(std::min<int64_t>(10000, split.train.size()), "fit");
  auto set = detect::DetectorSet::calibrate(candidate, sha256_file_hex(candidate_path), co, fit.inputs(), fit.targets(),
                                            split.validation.inputs());
  set.monitor_reference() =
      detect::fit_monitor_reference(set, candidate, split.validation.inputs(), split.validation.targets());
  const std::string calibration_path = job_dir + "/candidate.detect";
  set.save(calibration_path);

  const auto test = data::load_dataset(h.data, data::Split::kTest, load);
  data::require_held_out(train, test);  // the gate never judges on the images the job trained on
  data::check_classes(test, candidate.spec().class_names);
  const auto gate = run_gate(candidate, production, test, policy_.gate, h.seed);
  {
    std::lock_guard<std::mutex> lock(mu_);
    last_gate_ = gate.to_json();
  }
  core_.metrics().counter("bulwark_guard_gate_total",
                          {{"model", options_.served_name}, {"result", gate.passed ? "passed" : "refused"}});
  if (!gate.passed) {
    abandon_job();
    return transition(State::kFailed, "gate refused the candidate: " + gate.reason, {{"gate", gate.to_json()}});
  }

  registry::RegisterRequest r;
  r.model = options_.model;
  r.files = {{"model.pt", candidate_path}, {"model.detect", calibration_path}};
  r.parent = production_version;
  r.lineage = {{"method", h.method}, {"eps", h.eps},       {"seed", h.seed},  {"dataset", h.data},
               {"epochs", h.epochs}, {"limit", h.limit}, {"command", "bulwark guard: hardening " + job_dir}};
  r.metrics = {{"gate", gate.to_json()}, {"clean", gate.candidate.clean}, {"robust", gate.candidate.robust}};
  const auto key = registry::SigningKey::load(h.key);
  const auto v = registry_->register_version(r, &key);
  int64_t labels = 0;
  const double before = feedback_accuracy(&labels);
  {
    std::lock_guard<std::mutex> lock(mu_);
    candidate_version_ = v.version;
    accuracy_before_ = labels >= policy_.watch.min_feedback ? before : -1;
    labels_before_ = labels;
  }
  transition(State::kPromoting, gate.reason, {{"candidate", v.ref()}, {"gate", gate.to_json()}});
  registry_->promote(options_.model, v.version, registry::Stage::kProduction);
  fs::remove_all(job_dir);  // the candidate now lives in the registry
  route_traffic(v.version, policy_.kubernetes.canary_percent, "canary");
}

void Controller::finish_promotion() {
  int64_t candidate;
  double since;
  {
    std::lock_guard<std::mutex> lock(mu_);
    candidate = candidate_version_;
    since = since_s_;
  }
  const auto served = core_.source_of(options_.served_name);
  if (served && served->registry_version == candidate) {
    core_.guard().events().publish(detect::Event{now_s(), "guard.promoted", "", options_.model, std::to_string(candidate), "",
                                                 0, 0, 0, {{"version", candidate}}});
    return transition(State::kWatching, "serving version " + std::to_string(candidate) + "; watching for " + secs(policy_.watch.window_s));
  }
  if (now_s() - since > options_.promote_deadline_s) {
    rollback("the server did not swap version " + std::to_string(candidate) + " in within " + secs(options_.promote_deadline_s));
  }
}

void Controller::judge_watch(const std::vector<detect::Event>& events) {
  double since, before;
  int64_t candidate;
  {
    std::lock_guard<std::mutex> lock(mu_);
    since = since_s_;
    before = accuracy_before_;
    candidate = candidate_version_;
  }
  const auto served = core_.source_of(options_.served_name);
  if (!served || served->registry_version != candidate) {
    return transition(State::kFailed, "version " + std::to_string(candidate) + " is no longer served (someone else moved the stage)");
  }
  if (policy_.watch.rollback_on_accuracy_alarm) {
    for (const auto& e : events) {
      if (e.kind == "alarm" && e.detector == "accuracy" && e.model == options_.served_name) {
        return rollback("accuracy alarm on the new version: " + std::to_string(e.statistic));
      }
    }
  }
  if (now_s() - since < policy_.watch.window_s) return;
  int64_t labels = 0;
  const double after = feedback_accuracy(&labels);
  if (labels < policy_.watch.min_feedback) {
    route_traffic(candidate, 100, "full");
    return transition(State::kStable, "kept: only " + std::to_string(labels) + " labels in the watch window (" +
                                          std::to_string(policy_.watch.min_feedback) + " needed to judge)");
  }
  if (before >= 0 && after < before - policy_.watch.max_accuracy_drop) {
    return rollback("feedback accuracy " + pct(after) + " is more than " + pct(policy_.watch.max_accuracy_drop) +
                    " below the replaced version's " + pct(before) + " (watch.max_accuracy_drop)");
  }
  if (after < policy_.watch.min_feedback_accuracy) {
    return rollback("feedback accuracy " + pct(after) + " is below " + pct(policy_.watch.min_feedback_accuracy) +
                    " (watch.min_feedback_accuracy)");
  }
  route_traffic(candidate, 100, "full");
  transition(State::kStable, "feedback accuracy " + pct(after) + " on " + std::to_string(labels) + " labels" +
                                 (before >= 0 ? " (replaced version: " + pct(before) + ")" : ""),
             {{"accuracy", after}, {"accuracy_before", before}, {"labels", labels}});
}

void Controller::rollback(const std::string& reason) {
  const auto v = registry_->rollback(options_.model);
  route_traffic(v.version, 100, "rollback");
  core_.guard().events().publish(detect::Event{now_s(), "guard.rolled-back", "", options_.model, std::to_string(v.version),
                                               "", 0, 0, 0, {{"version", v.version}, {"reason", reason}}});
  transition(State::kRolledBack, reason, {{"production", v.ref()}});
}

void Controller::route_traffic(int64_t version, int64_t percent, const std::string& step) {
  if (!isvc_) return;
  auto applied = isvc_->apply(version, percent);
  applied["step"] = step;
  registry_->record("guard.inferenceservice", options_.model, applied);
}

void Controller::abandon_job() {
  if (runner_) runner_->cancel(10);
  std::string dir;
  {
    std::lock_guard<std::mutex> lock(mu_);
    dir = job_dir_;
  }
  std::error_code ec;
  if (!dir.empty()) fs::remove_all(dir, ec);
}

double Controller::feedback_accuracy(int64_t* labels) const {
  const auto status = core_.guard().status(now_s());
  const auto& m = status["monitors"];
  *labels = 0;
  if (!m.contains(options_.served_name)) return -1;
  const auto& s = m[options_.served_name];
  *labels = s.value("window_feedback", int64_t{0});
  return s.contains("accuracy") && s["accuracy"].is_number() ? s["accuracy"].get<double>() : -1;
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
         {"accuracy_before", accuracy_before_}};
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
    accuracy_before_ = j.value("accuracy_before", -1.0);
  }
  int64_t production = 0;
  try {
    production = registry_->resolve(registry::Reference{options_.model, 0, registry::Stage::kProduction}).version;
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
        return transition(State::kWatching, "guard restarted after promoting version " + std::to_string(production) +
                                                ": watching it again");
      }
      abandon_job();
      return transition(State::kFailed, "guard restarted before version " + std::to_string(candidate_version_) +
                                            " reached production: not promoted");
    case State::kWatching:
      if (production != candidate_version_) {
        return transition(State::kFailed, "guard restarted while watching version " + std::to_string(candidate_version_) +
                                              ", which is no longer in production");
      }
      return transition(State::kWatching, "guard restarted: watching version " + std::to_string(production) + " again");
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
  return j;
}

json Controller::request_hardening(const std::string& actor) {
  std::lock_guard<std::mutex> lock(mu_);
  const bool idle = state_ == State::kServing || state_ == State::kStable || state_ == State::kFailed ||
                    state_ == State::kRolledBack;
  if (!idle) {
    throw Error(ErrorKind::kUnavailable, "the controller is " + to_string(state_) + ": one job at a time");
  }
  manual_request_ = actor;
  cv_.notify_all();
  return {{"accepted", true}, {"state", to_string(state_)}};
}

}  // namespace bulwark::control
