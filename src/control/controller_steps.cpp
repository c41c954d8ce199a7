// control/controller_steps.cpp — the controller's long steps: gate a hardened candidate on a
// worker and promote it (signed, audited), finish a canary, judge the watch after a promotion, hold, roll
// back, route traffic, abandon a job. The loop and its states are in controller.cpp.
#include <torch/torch.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <future>
#include <iostream>
#include <map>
#include <optional>

#include "control/controller.h"
#include "control/detail/controller_util.h"
#include "control/gate.h"
#include "control/kubernetes.h"
#include "core/cancel.h"
#include "core/digest.h"
#include "core/error.h"
#include "core/files.h"
#include "data/classes.h"
#include "data/dataset.h"
#include "detect/calibration.h"
#include "detect/monitor_fit.h"
#include "model/model.h"
#include "registry/location.h"
#include "poison/digest.h"
#include "registry/registry.h"
#include "registry/runs.h"
#include "serve/core.h"

namespace bulwark::control {
namespace fs = std::filesystem;
using nlohmann::json;
using detail::now_s;
using detail::pct;
using detail::secs;

namespace {

struct PoisonScan {
  std::string run_id;
  bool failed = true;
};

// Finished `bulwark poison scan --registry` runs by the digest of the rows they scanned, the
// newest of each digest (runs come newest first). This runs on the loop thread, which must not
// block: only the newest kPoisonScansRead scans are read (a few small queries each).
constexpr int64_t kPoisonScansRead = 100;
std::map<std::string, PoisonScan> poison_scans(registry::Registry& registry) {
  std::map<std::string, PoisonScan> out;
  for (const auto& listed : registry::list_runs(registry, "poison-scan", kPoisonScansRead)) {
    if (listed.status != "FINISHED") continue;
    const auto run = registry::show_run(registry, listed.run_id);  // the list leaves out tags and metrics
    if (!run.tags.contains("dataset_sha256")) continue;
    const auto digest = run.tags.at("dataset_sha256").get<std::string>();
    if (out.count(digest)) continue;
    PoisonScan scan{run.run_id, true};  // a scan without its verdict counts as failed
    for (const auto& m : run.metrics) {
      if (m.key == "failed") scan.failed = m.value != 0;
    }
    out.emplace(digest, scan);
  }
  return out;
}

// Empty when the rows' newest scan flagged nothing; else why the candidate is refused.
std::string poison_scan_refusal(const std::map<std::string, PoisonScan>& scans, const data::Dataset& rows,
                                const HardeningPolicy& h) {
  const auto digest = poison::dataset_digest(rows);
  const auto it = scans.find(digest);
  if (it == scans.end()) {
    const std::string limit = h.limit > 0 ? " --limit " + std::to_string(rows.size()) : "";
    return "gate.require_poison_scan: no finished poison scan of the training rows (" + std::to_string(rows.size()) +
           " rows of " + h.data + ", sha256 " + digest + ") in the registry: run `bulwark poison scan --model PRODUCTION.pt --data " +
           h.data + limit + " --registry ...` on them";
  }
  if (it->second.failed) {
    return "gate.require_poison_scan: the training rows (sha256 " + digest + ") failed poison scan run " +
           it->second.run_id + ": remove the suspects and retrain";
  }
  return "";
}

// What the gate worker needs, read on the loop thread before it starts (the registry handle is the
// loop thread's), and what it hands back.
struct GateInputs {
  std::string job_dir;
  std::string production_ref, production_bytes;
  std::string first_ref, first_bytes;  // empty when production is its lineage's first version
  int64_t first_version = 0;
  HardeningPolicy hardening;
  GatePolicy gate;
  CancelFlag cancel;
  // gate.require_poison_scan: the newest finished poison-scan run per training-set digest.
  std::map<std::string, PoisonScan> poison_scans;
};

// The gating step's long part, on the worker: the candidate's own detectors and monitor
// reference, on the held-out part of the split its job trained on (production's calibration is
// bound to the production model), then the gate on test points the job never saw. Throws
// Cancelled within an attack iteration or a calibration chunk once `in.cancel` is set.
Controller::GateOutcome run_gate_work(const GateInputs& in) {
  Controller::GateOutcome out;
  out.candidate_path = in.job_dir + "/candidate.pt";
  auto candidate = model::Model::load(out.candidate_path);
  auto production = model::Model::from_bytes(in.production_bytes, in.production_ref);
  candidate.set_training(false);
  const auto& h = in.hardening;
  data::LoadOptions load;
  load.shape = candidate.spec().input_shape;
  load.progress = false;
  auto train = data::load_dataset(h.data, data::Split::kTrain, load);
  throw_if_cancelled(in.cancel, "gating");
  if (h.limit > 0 && h.limit < train.size()) train = train.head(h.limit, "policy.hardening.limit");
  if (in.gate.require_poison_scan) {
    const auto refusal = poison_scan_refusal(in.poison_scans, train, h);
    if (!refusal.empty()) {
      out.gate.passed = false;
      out.gate.reason = refusal;
      return out;
    }
  }
  const auto split = data::split_train_validation(train, h.validation_fraction(train.size()), h.seed);
  detect::CalibrationOptions co;
  co.detectors = h.detectors;
  co.cancel = in.cancel;
  co.validate();
  const auto fit = split.train.head(std::min<int64_t>(10000, split.train.size()), "fit");
  auto set = detect::DetectorSet::calibrate(candidate, sha256_file_hex(out.candidate_path), co, fit.inputs(),
                                            fit.targets(), split.validation.inputs());
  set.monitor_reference() = detect::fit_monitor_reference(set, candidate, split.validation.inputs(),
                                                          split.validation.targets(), in.cancel);
  out.calibration_path = in.job_dir + "/candidate.detect";
  set.save(out.calibration_path);

  const auto test = data::load_dataset(h.data, data::Split::kTest, load);
  data::require_held_out(train, test);  // the gate never judges on the images the job trained on
  data::check_classes(test, candidate.spec().class_names);
  std::optional<model::Model> first;
  if (!in.first_bytes.empty()) first.emplace(model::Model::from_bytes(in.first_bytes, in.first_ref));
  out.gate = run_gate(candidate, production, test, in.gate, h.seed, first ? &*first : nullptr, in.first_version,
                      in.cancel);
  return out;
}

}  // namespace

void Controller::start_gate() {
  GateInputs in;
  int64_t production_version;
  {
    std::lock_guard<std::mutex> lock(mu_);
    in.job_dir = job_dir_;
    production_version = production_version_;
  }
  const auto production = registry_->resolve(registry::Reference{options_.model, production_version, registry::Stage::kNone});
  in.production_ref = production.ref();
  in.production_bytes = registry_->read_verified(production).at("model.pt");
  // The root of production's lineage: the clean floor repeated cycles cannot ratchet down.
  auto root = production;
  for (int i = 0; i < 1000 && root.parent && *root.parent > 0; ++i) {
    root = registry_->resolve(registry::Reference{options_.model, *root.parent, registry::Stage::kNone});
  }
  in.first_version = root.version;
  if (root.version != production.version) {
    in.first_ref = root.ref();
    in.first_bytes = registry_->read_verified(root).at("model.pt");
  }
  in.hardening = policy_.hardening;
  in.gate = policy_.gate;
  in.cancel = cancel_;
  if (policy_.gate.require_poison_scan) in.poison_scans = poison_scans(*registry_);
  gate_work_ = std::async(std::launch::async, [in = std::move(in)] { return run_gate_work(in); });
}

void Controller::poll_gate() {
  if (!gate_work_.valid()) return start_gate();  // the first call in gating
  if (gate_work_.wait_for(std::chrono::seconds(0)) != std::future_status::ready) return;
  const auto work = gate_work_.get();  // rethrows the worker's error: the loop fails the job
  const auto& gate = work.gate;
  int64_t production_version;
  std::string job_dir;
  {
    std::lock_guard<std::mutex> lock(mu_);
    last_gate_ = gate.to_json();
    production_version = production_version_;
    job_dir = job_dir_;
  }
  core_.metrics().counter("bulwark_guard_gate_total",
                          {{"model", options_.served_name}, {"result", gate.passed ? "passed" : "refused"}});
  if (!gate.passed) {
    abandon_job();
    return transition(State::kFailed, "gate refused the candidate: " + gate.reason, {{"gate", gate.to_json()}});
  }

  const auto& h = policy_.hardening;
  registry::RegisterRequest r;
  r.model = options_.model;
  r.files = {{"model.pt", work.candidate_path}, {"model.detect", work.calibration_path}};
  r.parent = production_version;
  r.lineage = {{"method", h.method}, {"eps", h.eps},       {"seed", h.seed},  {"dataset", h.data},
               {"epochs", h.epochs}, {"limit", h.limit}, {"command", "bulwark guard: hardening " + job_dir}};
  r.metrics = {{"gate", gate.to_json()}, {"clean", gate.candidate.clean}, {"robust", gate.candidate.robust}};
  const auto key = registry::SigningKey::load(h.key);
  const auto v = registry_->register_version(r, &key);
  {
    std::lock_guard<std::mutex> lock(mu_);
    candidate_version_ = v.version;
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
    {
      std::lock_guard<std::mutex> lock(mu_);
      promoted_s_ = now_s();
      candidate_serve_version_ = served->serve_version;
    }
    core_.guard().events().publish(detect::Event{now_s(), "guard.promoted", "", options_.model, std::to_string(candidate), "",
                                                 0, 0, 0, {{"version", candidate}}});
    return transition(State::kWatching, "serving version " + std::to_string(candidate) + "; watching for " +
                                            secs(policy_.watch.window_s) + " (up to " + secs(policy_.watch.max_window()) +
                                            " for labels)");
  }
  if (now_s() - since > options_.promote_deadline_s) {
    rollback("the server did not swap version " + std::to_string(candidate) + " in within " + secs(options_.promote_deadline_s));
  }
}

void Controller::judge_watch(const std::vector<detect::Event>& events) {
  double promoted, alarm;
  int64_t candidate;
  std::string replaced_sv, candidate_sv;
  {
    std::lock_guard<std::mutex> lock(mu_);
    promoted = promoted_s_;
    alarm = alarm_s_;
    candidate = candidate_version_;
    replaced_sv = replaced_serve_version_;
    candidate_sv = candidate_serve_version_;
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
  const auto& w = policy_.watch;
  const double now = now_s();
  auto& guard = core_.guard();
  // Labels count for the version that answered, by answer time (serve/guard.h's ledger).
  const auto benign = guard.labelled(options_.served_name, replaced_sv, alarm - w.window_s, alarm);
  const auto attacked = guard.labelled(options_.served_name, replaced_sv, alarm, promoted);
  const auto mine = guard.labelled(options_.served_name, candidate_sv, promoted, now + 1);
  // Under the attack the candidate is judged against the replaced version under the same attack,
  // when there are labels from then; otherwise (a requested job, labels not back yet) against its
  // benign accuracy.
  const bool ongoing = attacked.labels >= w.min_feedback && attack_ongoing(now);
  const auto& reference = ongoing ? attacked : benign;
  const std::string against = ongoing ? "the replaced version's under the attack (alarm to promotion)"
                                       : "the replaced version's before the alarm";
  const json numbers{{"replaced_before_alarm", benign.to_json()},
                     {"replaced_under_attack", attacked.to_json()},
                     {"candidate", mine.to_json()},
                     {"attack_ongoing", ongoing},
                     {"compared_with", ongoing ? "replaced_under_attack" : "replaced_before_alarm"},
                     {"watched_s", now - promoted}};
  {
    std::lock_guard<std::mutex> lock(mu_);
    watch_ = numbers;
  }
  const bool enough = mine.labels >= w.min_feedback && reference.labels >= w.min_feedback;
  if (enough) {
    std::string worse;
    if (mine.accuracy() < reference.accuracy() - w.max_accuracy_drop) {
      worse = "feedback accuracy " + pct(mine.accuracy()) + " is more than " + pct(w.max_accuracy_drop) + " below " +
              against + " " + pct(reference.accuracy()) + " (watch.max_accuracy_drop)";
    } else if (mine.accuracy() < w.min_feedback_accuracy) {
      worse = "feedback accuracy " + pct(mine.accuracy()) + " is below " + pct(w.min_feedback_accuracy) +
              " (watch.min_feedback_accuracy)";
    }
    if (!worse.empty()) {
      if (mine.labellers >= w.min_labellers) return rollback(worse);
      return hold(worse + "; the labels come from " + std::to_string(mine.labellers) + " feedback token(s), a rollback needs " +
                      std::to_string(w.min_labellers) + " (watch.min_labellers) or an admin's decision",
                  numbers);
    }
    if (now - promoted < w.window_s) return;
    route_traffic(candidate, 100, "full");
    return transition(State::kStable,
                      "feedback accuracy " + pct(mine.accuracy()) + " on " + std::to_string(mine.labels) + " labels (" +
                          against + ": " + pct(reference.accuracy()) + " on " + std::to_string(reference.labels) + ")",
                      {{"watch", numbers}});
  }
  if (now - promoted < w.max_window()) return;  // the watch extends while labels come in
  hold("too few labels after " + secs(now - promoted) + " (watch.max_window_s): " + std::to_string(mine.labels) +
           " on the new version, " + std::to_string(reference.labels) + " on " + against + ", " +
           std::to_string(w.min_feedback) + " needed for each (watch.min_feedback)",
       numbers);
}

void Controller::hold(const std::string& reason, json details) {
  int64_t candidate;
  {
    std::lock_guard<std::mutex> lock(mu_);
    candidate = candidate_version_;
  }
  core_.guard().events().publish(detect::Event{now_s(), "guard.held", "", options_.model, std::to_string(candidate), "", 0,
                                               0, 0, {{"version", candidate}, {"reason", reason}, {"watch", details}}});
  transition(State::kHeld, reason + ": held at its current traffic share until an admin decides (POST /v2/guard/decide)",
             {{"watch", details}});
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

void Controller::abandon_job(double deadline_s) {
  if (runner_) runner_->cancel(deadline_s);
  std::string dir;
  {
    std::lock_guard<std::mutex> lock(mu_);
    dir = job_dir_;
  }
  std::error_code ec;
  if (!dir.empty()) fs::remove_all(dir, ec);
}

}  // namespace bulwark::control
