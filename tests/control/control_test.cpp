// The closed loop's controller on a real server core, registry and hardening job: the gate
// refuses a weak candidate naming the threshold; the watch rolls back a promoted version that
// does worse on labelled feedback; a guard killed mid-hardening restarts into a consistent state;
// the subprocess runner is cancelled within its deadline; the policy's attack precision reaches
// the job; bad policies name the key.
#include <signal.h>
#include <sys/wait.h>

#include <iostream>

#include "control/loop_fixture.h"
#include "defense/harden.h"
#include "poison/digest.h"
#include "registry/runs.h"

namespace bulwark::testing {
namespace {

TEST(Control, TheGateRefusesAWeakCandidateAndSaysWhichThreshold) {
  LoopRegistry r;
  auto policy = small_policy(r.key);
  policy.gate.min_robust_accuracy = 0.99;  // no one-epoch candidate reaches this
  Loop loop(r, policy);
  loop.controller->request_hardening("test");
  ASSERT_TRUE(loop.wait_for(control::State::kFailed, 240 * kSanitizerSlowdown)) << loop.controller->status().dump(2);
  ASSERT_TRUE(loop.controller->status()["last_gate"].is_object()) << "failed before the gate: "
                                                                   << loop.controller->status().dump(2);
  const auto status = loop.controller->status();
  EXPECT_NE(status["reason"].get<std::string>().find("gate.min_robust_accuracy"), std::string::npos) << status.dump(2);
  EXPECT_FALSE(status["last_gate"]["passed"].get<bool>());
  // Not registered, not promoted; the event and the audit entry say why.
  EXPECT_EQ(r.production(), 1);
  registry::Registry reg(r.reg, "test");
  EXPECT_EQ(reg.versions("m").size(), 1u);
  const auto events = loop.guard_events();
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back().details["to"], "failed");
  EXPECT_NE(events.back().details["reason"].get<std::string>().find("gate.min_robust_accuracy"), std::string::npos);
  std::vector<std::string> path;
  for (const auto& e : r.audit()) {
    if (e.action == "guard.transition") path.push_back(json::parse(e.details)["to"]);
  }
  EXPECT_EQ(path, (std::vector<std::string>{"hardening", "gating", "failed"}));
  EXPECT_TRUE(r.audit_ok());
  EXPECT_EQ(loop.core.source_of("fashion")->registry_version, 1);
}

// The small policy with a gate any candidate passes: the watch is under test.
control::Policy watch_policy(const std::string& key) {
  auto policy = small_policy(key);
  policy.gate.min_robust_accuracy = 0;
  policy.gate.max_clean_drop = 1;
  policy.gate.max_clean_drop_from_first = 1;
  return policy;
}

// With the watch's default windows (policy defaults, no monitor override): the candidate's own
// answers since promotion against the replaced version's before the request; labels from two
// labellers roll it back as soon as min_feedback of them show it worse.
TEST(Control, TheWatchRollsBackAPromotedVersionThatDoesWorse) {
  LoopRegistry r;
  auto policy = watch_policy(r.key);
  policy.watch = control::WatchPolicy{};  // the defaults: 60 s, up to 300 s, 20 labels, 2 labellers
  Loop loop(r, policy);
  // version 1: 100 % on its feedback
  EXPECT_EQ(loop.labelled_traffic(20, /*agree=*/true, 0), std::set<std::string>{"1"});
  loop.controller->request_hardening("test");
  ASSERT_TRUE(loop.wait_for(control::State::kWatching, 240 * kSanitizerSlowdown)) << loop.controller->status().dump(2);
  EXPECT_EQ(r.production(), 2);
  EXPECT_EQ(loop.core.source_of("fashion")->registry_version, 2);
  // One number for the promoted model: the registry's, in the event, the answers and the receipts.
  EXPECT_EQ(loop.core.source_of("fashion")->serve_version, "2");
  std::string promoted_version;
  for (const auto& e : loop.guard_events()) {
    if (e.kind == "guard.promoted") promoted_version = e.version;
  }
  EXPECT_EQ(promoted_version, "2");
  // the scripted regression: version 2 is always wrong
  EXPECT_EQ(loop.labelled_traffic(20, /*agree=*/false, 100), std::set<std::string>{"2"});
  ASSERT_TRUE(loop.wait_for(control::State::kRolledBack, 30))
      << loop.controller->status().dump(2) << loop.core.guard_status()["guard"]["monitors"].dump(2);
  const auto status = loop.controller->status();
  EXPECT_NE(status["reason"].get<std::string>().find("watch.max_accuracy_drop"), std::string::npos) << status.dump(2);
  EXPECT_NE(status["reason"].get<std::string>().find("before the alarm"), std::string::npos) << status.dump(2);
  const auto& w = status["watch"];
  EXPECT_EQ(w["replaced_before_alarm"]["labels"], 20) << status.dump(2);
  EXPECT_EQ(w["replaced_before_alarm"]["accuracy"], 1.0);
  EXPECT_EQ(w["candidate"]["labels"], 20);
  EXPECT_EQ(w["candidate"]["accuracy"], 0.0);
  EXPECT_EQ(w["candidate"]["labellers"], 2);
  EXPECT_EQ(r.production(), 1);
  EXPECT_TRUE(eventually([&] { return loop.core.source_of("fashion")->registry_version == 1; }));
  EXPECT_EQ(loop.core.source_of("fashion")->serve_version, "1") << "the rollback serves registry version 1 as \"1\"";
  bool rolled_back_event = false;
  for (const auto& e : loop.guard_events()) rolled_back_event = rolled_back_event || e.kind == "guard.rolled-back";
  EXPECT_TRUE(rolled_back_event);
  EXPECT_TRUE(r.audit_ok());
}

// One labeller cannot undo a version: the same regression labelled by one token holds the
// candidate for an admin, who rolls it back (POST /v2/guard/decide).
TEST(Control, ARollbackOnOneLabellersWordHoldsForAnAdmin) {
  LoopRegistry r;
  auto policy = watch_policy(r.key);
  policy.watch = control::WatchPolicy{};
  Loop loop(r, policy);
  loop.labelled_traffic(20, /*agree=*/true, 0);
  loop.controller->request_hardening("test");
  ASSERT_TRUE(loop.wait_for(control::State::kWatching, 240 * kSanitizerSlowdown)) << loop.controller->status().dump(2);
  loop.labelled_traffic(20, /*agree=*/false, 100, /*one_labeller=*/true);
  ASSERT_TRUE(loop.wait_for(control::State::kHeld, 30)) << loop.controller->status().dump(2);
  EXPECT_NE(loop.controller->status()["reason"].get<std::string>().find("watch.min_labellers"), std::string::npos);
  EXPECT_EQ(r.production(), 2);  // not rolled back on one token's labels
  bool held_event = false;
  for (const auto& e : loop.guard_events()) held_event = held_event || e.kind == "guard.held";
  EXPECT_TRUE(held_event);
  // The decision is an admin's: an infer token is refused, a bad body names the field.
  httplib::Client c("127.0.0.1", loop.http->port());
  c.set_bearer_token_auth(kClientAToken);
  EXPECT_EQ(c.Post("/v2/guard/decide", R"({"decision":"rollback"})", "application/json")->status, 403);
  c.set_bearer_token_auth(kOpsToken);
  EXPECT_EQ(c.Post("/v2/guard/decide", R"({"decision":"undo"})", "application/json")->status, 400);
  EXPECT_EQ(c.Post("/v2/guard/decide", R"({"decision":"rollback"})", "application/json")->status, 202);
  ASSERT_TRUE(loop.wait_for(control::State::kRolledBack, 30)) << loop.controller->status().dump(2);
  EXPECT_NE(loop.controller->status()["reason"].get<std::string>().find("token:ops"), std::string::npos);
  EXPECT_EQ(r.production(), 1);
  EXPECT_EQ(c.Post("/v2/guard/decide", R"({"decision":"keep"})", "application/json")->status, 503);  // nothing held
}

// Too few labels: the watch extends to max_window_s, then holds — neither full traffic nor a
// rollback — and says so; an admin keeps it.
TEST(Control, WithTooFewLabelsTheWatchHoldsAndSaysSo) {
  LoopRegistry r;
  auto policy = watch_policy(r.key);
  policy.watch.window_s = 1;
  policy.watch.max_window_s = 3;
  policy.watch.min_feedback = 10;
  Loop loop(r, policy);
  loop.labelled_traffic(10, /*agree=*/true, 0);
  loop.controller->request_hardening("test");
  ASSERT_TRUE(loop.wait_for(control::State::kWatching, 240 * kSanitizerSlowdown)) << loop.controller->status().dump(2);
  loop.labelled_traffic(3, /*agree=*/true, 100);  // 3 of the 10 labels it needs
  ASSERT_TRUE(loop.wait_for(control::State::kHeld, 30)) << loop.controller->status().dump(2);
  const auto status = loop.controller->status();
  EXPECT_NE(status["reason"].get<std::string>().find("too few labels"), std::string::npos) << status.dump(2);
  EXPECT_NE(status["reason"].get<std::string>().find("3 on the new version"), std::string::npos) << status.dump(2);
  EXPECT_GE(status["watch"]["watched_s"].get<double>(), 3.0);
  EXPECT_EQ(r.production(), 2);
  EXPECT_EQ(loop.controller->decide("token:ops", "keep")["accepted"], true);
  ASSERT_TRUE(loop.wait_for(control::State::kStable, 30)) << loop.controller->status().dump(2);
  EXPECT_EQ(r.production(), 2);
}

// A traffic alarm from one client's requests starts no job, however long it lasts; evidence from a
// second identity does. With the gate refusing every candidate and the attack going on, the loop
// tries again after each cooldown (no new alarm event comes) until the day's job budget is spent.
TEST(Control, OneClientCannotStartAJobAndAPersistingAlarmIsRetriedWithinTheBudget) {
  LoopRegistry r(/*trained=*/true);
  auto policy = small_policy(r.key);
  policy.trigger.alarms = {"detector_rate", "confidence"};
  policy.trigger.persistence_s = 0.5;
  policy.trigger.max_jobs_per_day = 2;
  policy.gate.min_robust_accuracy = 0.99;  // refused: the attack outlasts the job
  policy.cooldown_s = 1;
  Loop loop(r, policy);
  std::atomic<bool> stop_a{false}, stop_b{false};
  std::thread a([&] { loop.noise_traffic(kClientAToken, stop_a); }), b;
  struct Joiner {  // a failed assertion below must not leave the threads running
    std::atomic<bool>& a;
    std::atomic<bool>& b;
    std::vector<std::thread*> threads;
    ~Joiner() {
      a = b = true;
      for (auto* t : threads) {
        if (t->joinable()) t->join();
      }
    }
  } joiner{stop_a, stop_b, {&a, &b}};
  ASSERT_TRUE(loop.wait_for(control::State::kAlarm, 60)) << loop.controller->status().dump(2)
                                                          << loop.core.guard_status()["guard"]["monitors"].dump(2);
  // One identity: the alarm stands, the job waits, and says for what.
  std::this_thread::sleep_for(std::chrono::seconds(4));
  EXPECT_EQ(loop.controller->state(), control::State::kAlarm) << loop.controller->status().dump(2);
  EXPECT_NE(loop.controller->status()["reason"].get<std::string>().find("trigger.min_clients"), std::string::npos)
      << loop.controller->status().dump(2);
  EXPECT_TRUE(Loop::transitions_to(r, "hardening").empty());
  // A second identity: the job starts.
  b = std::thread([&] { loop.noise_traffic(kClientBToken, stop_b); });
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(400 * kSanitizerSlowdown);
  bool budget_said = false;
  while (std::chrono::steady_clock::now() < deadline && !budget_said) {
    for (const auto& e : loop.guard_events()) {
      budget_said = budget_said || (e.kind == "guard.waiting" &&
                                    e.details["waiting_for"].get<std::string>().find("trigger.max_jobs_per_day") != std::string::npos);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  std::this_thread::sleep_for(std::chrono::seconds(3));  // no third job follows the budget's word
  stop_a = stop_b = true;
  EXPECT_TRUE(budget_said) << loop.controller->status().dump(2);
  const auto jobs = Loop::transitions_to(r, "hardening");
  EXPECT_EQ(jobs.size(), 2u) << loop.controller->status().dump(2);
  EXPECT_EQ(Loop::transitions_to(r, "failed").size(), 2u);
  // The second job came from the standing alarm, after the cooldown, not from a new alarm event.
  bool retried = false;
  for (const auto& reason : Loop::transitions_to(r, "alarm")) retried = retried || reason.find("still standing") != std::string::npos;
  EXPECT_TRUE(retried);
  EXPECT_EQ(r.production(), 1);
  EXPECT_GE(loop.controller->status()["failure_streak"].get<int64_t>(), 2);
}

TEST(Control, AGuardKilledMidHardeningRestartsConsistent) {
  LoopRegistry r;
  const auto config = r.dir.file("guard.yaml");
  std::ofstream(config) << "serve:\n  registry: " << r.reg << "\n  trust-keys: " << r.trusted() << "\n  log-key: " << r.log_pub
                        << "\n  model: {fashion: \"registry:m@production\"}\n"
                        << "  http-port: 0\n  grpc-port: -1\n  access-log: \"off\"\n  tokens: " << r.dir.file("tokens.yaml")
                        << "\npolicy:\n  hardening: {method: pgd-at, epochs: 50, limit: 20000, budget_minutes: 60, key: "
                        << r.key << "}\n  cooldown_s: 3600\n";
  const auto minted = run_command(std::string(BULWARK_BIN) + " --json token --id ops --roles infer,admin");
  const auto tok = json::parse(minted.output.substr(minted.output.find('{')));
  std::ofstream(r.dir.file("tokens.yaml")) << "tokens:\n  - id: ops\n    sha256: " << tok["sha256"].get<std::string>()
                                           << "\n    roles: [infer, admin]\n";
  const httplib::Headers admin{{"Authorization", "Bearer " + tok["token"].get<std::string>()}};
  const auto guard_state = [&admin](httplib::Client& c) {
    const auto res = c.Get("/v2/guard", admin);
    return res && res->status == 200 ? json::parse(res->body)["controller"] : json(nullptr);
  };
  std::string job_dir;
  {
    ServerProcess p({"--json", "guard", "--config", config});
    const auto line = p.first_line();
    ASSERT_FALSE(line.empty());
    httplib::Client c("127.0.0.1", json::parse(line)["http_port"].get<int>());
    ASSERT_EQ(c.Post("/v2/guard/harden", admin, "", "application/json")->status, 202);
    ASSERT_TRUE(eventually([&] {
      const auto s = guard_state(c);
      return s.is_object() && s["state"] == "hardening";
    }));
    job_dir = r.reg + "/guard/jobs/" + guard_state(c)["job"]["id"].get<std::string>();
    ASSERT_TRUE(fs::exists(job_dir));
    p.signal(SIGKILL);
    p.wait_exit();
  }
  ServerProcess p({"--json", "guard", "--config", config});
  const auto line = p.first_line();
  ASSERT_FALSE(line.empty());
  httplib::Client c("127.0.0.1", json::parse(line)["http_port"].get<int>());
  const auto s = guard_state(c);
  EXPECT_EQ(s["state"], "failed") << s.dump(2);
  EXPECT_NE(s["reason"].get<std::string>().find("restarted during hardening"), std::string::npos) << s.dump(2);
  EXPECT_FALSE(fs::exists(job_dir)) << "the abandoned job's files are left behind";
  EXPECT_EQ(r.production(), 1);
  EXPECT_TRUE(r.audit_ok());
  // And it can work again: the state file is whole and the controller takes a new request.
  EXPECT_EQ(c.Post("/v2/guard/harden", admin, "", "application/json")->status, 202);
}

TEST(Control, AStopDuringHardeningCancelsTheJobAndSaysSo) {
  LoopRegistry r;
  auto policy = small_policy(r.key);
  policy.hardening.epochs = 200;  // far longer than the test
  Loop loop(r, policy);
  loop.controller->request_hardening("test");
  ASSERT_TRUE(loop.wait_for(control::State::kHardening, 30));
  const auto job = loop.controller->status()["job"]["id"].get<std::string>();
  const auto t0 = std::chrono::steady_clock::now();
  loop.controller->stop();
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 1.0 * kSanitizerSlowdown);
  EXPECT_EQ(loop.controller->state(), control::State::kFailed);
  EXPECT_NE(loop.controller->status()["reason"].get<std::string>().find("stopped during hardening"), std::string::npos);
  EXPECT_FALSE(fs::exists(r.reg + "/guard/jobs/" + job));
  const auto saved = json::parse(read_file(r.reg + "/guard/m.state.json"));
  EXPECT_EQ(saved["state"], "failed");
  EXPECT_EQ(r.production(), 1);
}

// stop() returns within a second from every state, the long ones included: a hardening job at
// work, the gate's attacks on the worker, a promotion waiting for the server's swap. Each state is
// reached the way the product reaches it (noise traffic, an admin's request or decision, the
// server's reload, the state file a restarted guard reads); between states the guard restarts:
// a new controller on the same state file.
TEST(Control, StopReturnsWithinASecondFromEveryState) {
  LoopRegistry r(/*trained=*/true);  // noise traffic raises its alarms
  auto policy = watch_policy(r.key);  // any candidate passes the gate
  policy.trigger.alarms = {"detector_rate", "confidence"};
  policy.trigger.persistence_s = 3600;  // an alarm stays an alarm
  auto long_gate = policy;             // a gate that runs for a while: 5,000 points, PGD-200
  long_gate.gate.n = 5000;
  long_gate.gate.pgd_steps = 200;
  Loop loop(r, policy, "registry:m@1");  // pinned: the server swaps when the test loads the stage
  std::map<std::string, double> stop_s;
  const auto stop_in = [&](control::State s) {
    EXPECT_EQ(loop.controller->state(), s) << loop.controller->status().dump(2);
    const auto t0 = std::chrono::steady_clock::now();
    loop.controller->stop();
    stop_s[control::to_string(s)] = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  };
  const auto reach = [&](control::State s, double seconds) { return loop.wait_for(s, seconds * kSanitizerSlowdown); };
  const auto restart = [&](const control::Policy& p) { loop.restart(p); };
  // The request is taken at the loop's next tick: wait for the state it leaves to change.
  const auto request_job = [&] {
    const auto before = loop.controller->state();
    loop.controller->request_hardening("test");
    return eventually([&] { return loop.controller->state() != before; });
  };

  stop_in(control::State::kServing);

  restart(policy);
  std::atomic<bool> noise_stop{false};
  std::thread noise([&] { loop.noise_traffic(kClientAToken, noise_stop); });
  const bool alarmed = loop.wait_for(control::State::kAlarm, 60 * kSanitizerSlowdown);
  if (alarmed) stop_in(control::State::kAlarm);
  noise_stop = true;
  noise.join();
  ASSERT_TRUE(alarmed) << loop.controller->status().dump(2);

  restart(policy);  // alarm: restarts serving (or in alarm again while the monitor's alarm stands)
  ASSERT_TRUE(request_job());
  ASSERT_TRUE(reach(control::State::kHardening, 30)) << loop.controller->status().dump(2);
  const auto job = loop.controller->status()["job"]["id"].get<std::string>();
  stop_in(control::State::kHardening);
  EXPECT_EQ(loop.controller->state(), control::State::kFailed);
  EXPECT_FALSE(fs::exists(r.reg + "/guard/jobs/" + job));

  restart(policy);  // failed, restored with its cooldown
  stop_in(control::State::kFailed);

  restart(long_gate);
  ASSERT_TRUE(request_job());  // the cooldown skipped
  ASSERT_TRUE(reach(control::State::kGating, 240)) << loop.controller->status().dump(2);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // the worker is inside the attacks
  stop_in(control::State::kGating);
  EXPECT_EQ(loop.controller->state(), control::State::kFailed);
  EXPECT_NE(loop.controller->status()["reason"].get<std::string>().find("stopped during gating"), std::string::npos);
  EXPECT_EQ(r.production(), 1) << "a stopped gate promotes nothing";

  restart(policy);
  ASSERT_TRUE(request_job());
  // Promoted in the registry; the server, pinned to version 1, has not swapped.
  ASSERT_TRUE(reach(control::State::kPromoting, 240)) << loop.controller->status().dump(2);
  // The state is entered just before the registry's promotion is written.
  EXPECT_TRUE(eventually([&] { return r.production() == 2; }));
  stop_in(control::State::kPromoting);

  restart(policy);  // promoting, and production is the candidate: held for an admin
  ASSERT_TRUE(reach(control::State::kHeld, 30)) << loop.controller->status().dump(2);
  stop_in(control::State::kHeld);

  restart(policy);
  loop.controller->decide("ops", "rollback");
  ASSERT_TRUE(reach(control::State::kRolledBack, 30)) << loop.controller->status().dump(2);
  EXPECT_EQ(r.production(), 1);
  stop_in(control::State::kRolledBack);

  restart(policy);
  ASSERT_TRUE(request_job());
  ASSERT_TRUE(reach(control::State::kPromoting, 240)) << loop.controller->status().dump(2);
  loop.core.load_model("fashion", "registry:m@production");  // the server follows the stage: the swap
  ASSERT_TRUE(reach(control::State::kWatching, 30)) << loop.controller->status().dump(2);
  stop_in(control::State::kWatching);

  restart(policy);  // watching, restarted: held (the labels were in memory)
  ASSERT_TRUE(reach(control::State::kHeld, 30)) << loop.controller->status().dump(2);
  loop.controller->decide("ops", "keep");
  ASSERT_TRUE(reach(control::State::kStable, 30)) << loop.controller->status().dump(2);
  stop_in(control::State::kStable);

  ASSERT_EQ(stop_s.size(), 10u) << "every state of the loop";
  for (const auto& [state, seconds] : stop_s) {
    EXPECT_LT(seconds, 1.0 * kSanitizerSlowdown) << "stop() from " << state << " took " << seconds << " s";
    std::cout << "stop() from " << state << ": " << seconds << " s\n";
  }
  loop.restart(policy);  // the fixture's own stop at the end
}

TEST(Control, TheSubprocessRunnerIsCancelledWithinItsDeadline) {
  LoopRegistry r;
  control::HardenJob job;
  job.id = "job-test";
  job.dir = r.dir.file("job");
  fs::create_directories(job.dir);
  job.base_model = r.dir.file("v1.pt");
  job.out = job.dir + "/candidate.pt";
  job.policy = small_policy(r.key).hardening;
  job.policy.epochs = 100;  // short epochs (limit 1200), so the log shows the first within seconds
  auto runner = control::make_runner("subprocess", BULWARK_BIN);
  runner->start(job);
  ASSERT_TRUE(eventually([&] { return runner->poll().progress.find("epoch") != std::string::npos; }))
      << "no progress read back from the child: " << runner->poll().progress;
  const auto t0 = std::chrono::steady_clock::now();
  runner->cancel(3);
  const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(runner->poll().phase, control::JobStatus::Phase::kCancelled);
  EXPECT_LT(took, 4.0);
  EXPECT_FALSE(fs::exists(job.out));
}

// hardening.attack_precision reaches the job whichever runner starts it: the candidate's spec
// records the options it was hardened with.
TEST(Control, TheJobHardensWithThePolicysAttackPrecision) {
  for (const std::string kind : {"thread", "subprocess"}) {
    LoopRegistry r;
    control::HardenJob job;
    job.id = "job-test";
    job.dir = r.dir.file("job");
    fs::create_directories(job.dir);
    job.base_model = r.dir.file("v1.pt");
    job.out = job.dir + "/candidate.pt";
    job.policy = small_policy(r.key).hardening;
    job.policy.limit = 600;
    job.policy.attack_precision = "bf16";
    auto runner = control::make_runner(kind, BULWARK_BIN);
    runner->start(job);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(300 * kSanitizerSlowdown);
    while (!runner->poll().done() && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    ASSERT_EQ(runner->poll().phase, control::JobStatus::Phase::kSucceeded) << kind << ": " << runner->poll().error;
    const auto candidate = model::Model::load(job.out);
    EXPECT_EQ(candidate.spec().hardening["options"]["attack_precision"], "bf16") << kind;
  }
}

// A candidate whose evaluation warns of gradient masking is refused whatever its numbers: here a
// model that quantises its input, so every white-box attack sees a zero gradient.
TEST(Control, TheGateRefusesACandidateThatMasksGradients) {
  TempDir dir;
  const auto path = dir.file("masked.pt");
  const auto made = run_command(std::string(kPython) + " " + BULWARK_FIXTURES_DIR + "/make_masked_model.py " + path);
  ASSERT_EQ(made.exit_code, 0) << made.output;
  auto candidate = model::Model::import_torchscript(path, model::default_spec(10));
  auto production = model::Model::load(write_model(dir, "p.pt", "mlp", 1));
  control::GatePolicy gate;
  gate.n = 50;
  gate.attacks = {"pgd"};
  gate.pgd_steps = 5;
  gate.min_robust_accuracy = 0;
  gate.max_clean_drop = 1;
  const auto test = data::load_dataset("fashion-mnist", data::Split::kTest);
  const auto r = control::run_gate(candidate, production, test, gate, 0);
  EXPECT_FALSE(r.passed);
  EXPECT_NE(r.reason.find("gradient masking"), std::string::npos) << r.reason;
  EXPECT_FALSE(r.candidate.warnings.empty());
}

// The clean floor of the lineage's first version: repeated cycles, each within max_clean_drop of
// the version before, cannot ratchet clean accuracy below it.
TEST(Control, TheGateHoldsCleanAccuracyToTheFirstVersion) {
  TempDir dir;
  auto a = model::Model::load(write_model(dir, "a.pt", "mlp", 1));
  auto b = model::Model::load(write_model(dir, "b.pt", "mlp", 2));
  control::GatePolicy gate;
  gate.n = 200;
  gate.attacks = {"fgsm"};
  gate.min_robust_accuracy = 0;
  gate.max_clean_drop = 1;  // production's own rule lets anything through
  gate.max_clean_drop_from_first = 0;
  const auto test = data::load_dataset("fashion-mnist", data::Split::kTest);
  const auto probe = control::run_gate(a, a, test, gate, 0, &b, 1);
  ASSERT_NE(probe.first_clean, probe.candidate.clean) << "the two untrained MLPs score alike; pick other seeds";
  EXPECT_TRUE(probe.passed == (probe.candidate.clean >= probe.first_clean)) << probe.reason;
  // Whichever is worse, as the candidate against the better one as the first version, is refused.
  auto& worse = probe.candidate.clean < probe.first_clean ? a : b;
  auto& better = probe.candidate.clean < probe.first_clean ? b : a;
  const auto r = control::run_gate(worse, worse, test, gate, 0, &better, 1);
  EXPECT_FALSE(r.passed);
  EXPECT_NE(r.reason.find("gate.max_clean_drop_from_first"), std::string::npos) << r.reason;
  EXPECT_NE(r.reason.find("first version's (1)"), std::string::npos) << r.reason;
  EXPECT_EQ(r.to_json()["first"]["version"], 1);
  gate.max_clean_drop_from_first = 1;
  EXPECT_TRUE(control::run_gate(worse, worse, test, gate, 0, &better, 1).passed);
}

// A `bulwark poison scan --registry` run as the command records it: tagged with the digest of the
// rows it scanned, `failed` among its metrics.
void record_poison_scan(const LoopRegistry& r, const data::Dataset& rows, bool failed) {
  registry::Registry reg(r.reg, "test");
  registry::RunRecorder run(reg, "poison-scan", {{"data", "fashion-mnist"}}, "bulwark poison scan");
  run.set_tag("dataset_sha256", poison::dataset_digest(rows));
  run.log_metric("failed", failed ? 1 : 0);
  run.finish();
}

// gate.require_poison_scan: the rows the job trained on (policy.hardening.limit of the training
// split, by content) need a scan that flagged nothing, the newest scan of those rows deciding; a
// scan of other rows does not count.
TEST(Control, TheGatePromotesOnlyRowsWhoseNewestPoisonScanPassed) {
  auto policy = watch_policy("");
  policy.gate.require_poison_scan = true;
  data::LoadOptions load;
  load.progress = false;
  const auto train = data::load_dataset("fashion-mnist", data::Split::kTrain, load);
  const auto rows = train.head(policy.hardening.limit);
  {
    LoopRegistry r;
    policy.hardening.key = r.key;
    record_poison_scan(r, train.head(policy.hardening.limit - 1), false);  // other rows
    Loop loop(r, policy);
    loop.controller->request_hardening("test");
    ASSERT_TRUE(loop.wait_for(control::State::kFailed, 240 * kSanitizerSlowdown)) << loop.controller->status().dump(2);
    const auto reason = loop.controller->status()["reason"].get<std::string>();
    EXPECT_NE(reason.find("gate.require_poison_scan: no finished poison scan"), std::string::npos) << reason;
    EXPECT_NE(reason.find(poison::dataset_digest(rows)), std::string::npos) << reason;
    EXPECT_EQ(r.production(), 1);
    registry::Registry reg(r.reg, "test");
    EXPECT_EQ(reg.versions("m").size(), 1u);
  }
  {
    LoopRegistry r;
    policy.hardening.key = r.key;
    record_poison_scan(r, rows, true);
    Loop loop(r, policy);
    loop.controller->request_hardening("test");
    ASSERT_TRUE(loop.wait_for(control::State::kFailed, 240 * kSanitizerSlowdown)) << loop.controller->status().dump(2);
    const auto reason = loop.controller->status()["reason"].get<std::string>();
    EXPECT_NE(reason.find("failed poison scan run"), std::string::npos) << reason;
    EXPECT_EQ(r.production(), 1);
    // A newer scan of the same rows that passes (the suspects were looked at) lets the next job through.
    record_poison_scan(r, rows, false);
    loop.restart(policy);
    loop.controller->request_hardening("test");
    // Taken at the loop's next tick: wait for it to leave `failed`.
    ASSERT_TRUE(eventually([&] { return loop.controller->state() != control::State::kFailed; }));
    ASSERT_TRUE(loop.wait_for(control::State::kWatching, 240 * kSanitizerSlowdown)) << loop.controller->status().dump(2);
    EXPECT_EQ(r.production(), 2);
  }
}

TEST(Control, PolicyErrorsNameTheKeyAndTheLimit) {
  const auto error_of = policy_error;
  EXPECT_NE(error_of("hardening: {key: k, method: adam}").find("policy.hardening.method"), std::string::npos);
  EXPECT_NE(error_of("hardening: {key: k, eps: 2}").find("policy.hardening.eps must be in (0, 1]"), std::string::npos);
  EXPECT_NE(error_of("hardening: {}").find("policy.hardening.key"), std::string::npos);
  EXPECT_NE(error_of("hardening: {key: k, clean_weight: 1}").find("policy.hardening.clean_weight must be in [0, 1)"),
            std::string::npos);
  EXPECT_NE(error_of("hardening: {key: k, method: trades, clean_weight: 0.2}").find("policy.hardening.clean_weight"),
            std::string::npos);
  EXPECT_NE(error_of("hardening: {key: k, attack_precision: fp16}").find("policy.hardening.attack_precision must be "
                                                                           "fp32 or bf16"),
            std::string::npos);
  EXPECT_NE(error_of("hardening: {key: k}\ngate: {n: 5}").find("policy.gate.n"), std::string::npos);
  EXPECT_NE(error_of("hardening: {key: k}\ntrigger: {alarms: [loud]}").find("'loud'"), std::string::npos);
  EXPECT_NE(error_of("hardening: {key: k}\nwatch: {windows: 3}").find("unknown key 'windows'"), std::string::npos);
  EXPECT_NE(error_of("hardening: {key: k}\ngate: {eps: fast}").find("policy.gate.eps: wrong type"), std::string::npos);
  EXPECT_NE(error_of("hardening: {key: k}\ntrigger: {min_clients: 0}").find("policy.trigger.min_clients must be in [1, 1000]"),
            std::string::npos);
  EXPECT_NE(error_of("hardening: {key: k}\nwatch: {window_s: 60, max_window_s: 30}").find("policy.watch.max_window_s"),
            std::string::npos);
  EXPECT_NE(error_of("hardening: {key: k}\ncooldown_s: 600\nmax_cooldown_s: 60").find("policy.max_cooldown_s"),
            std::string::npos);
  EXPECT_EQ(error_of("hardening: {key: k}"), "accepted");
}

// The loop's default hardening is the measured 10-minute winner, `bulwark harden --preset loop`.
TEST(Control, TheDefaultHardeningIsTheLoopPreset) {
  const control::HardeningPolicy h;
  const defense::HardenPreset& loop = defense::find_harden_preset("loop");
  EXPECT_EQ(h.method, loop.method);
  EXPECT_EQ(h.epochs, loop.epochs);
  EXPECT_DOUBLE_EQ(h.budget_minutes, loop.budget_minutes);
  EXPECT_DOUBLE_EQ(h.clean_weight, loop.clean_weight);
  // The policy has no schedule or averaging key: the job must get the preset's from harden's defaults.
  defense::HardenOptions o;
  o.method = h.method;
  EXPECT_EQ(o.effective_lr_schedule(), loop.lr_schedule);
  EXPECT_DOUBLE_EQ(o.ema_decay, loop.ema_decay);
  EXPECT_DOUBLE_EQ(o.lr, loop.lr);
}

}  // namespace
}  // namespace bulwark::testing

