// The closed loop's controller on a real server core, registry and hardening job: the gate
// refuses a weak candidate naming the threshold; the watch rolls back a promoted version that
// does worse on labelled feedback; a guard killed mid-hardening restarts into a consistent state;
// the subprocess runner is cancelled within its deadline; the policy's attack precision reaches
// the job; bad policies name the key.
#include <signal.h>
#include <sys/wait.h>

#include "control/loop_fixture.h"

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

TEST(Control, TheWatchRollsBackAPromotedVersionThatDoesWorse) {
  LoopRegistry r;
  auto policy = small_policy(r.key);
  policy.gate.min_robust_accuracy = 0;  // let any candidate through: the watch is under test
  policy.gate.max_clean_drop = 1;
  policy.watch.window_s = 8;  // room for the 20 labelled requests below
  Loop loop(r, policy);
  loop.labelled_traffic(20, /*agree=*/true, 0);  // version 1: 100 % on its feedback
  loop.controller->request_hardening("test");
  ASSERT_TRUE(loop.wait_for(control::State::kWatching, 240 * kSanitizerSlowdown)) << loop.controller->status().dump(2);
  EXPECT_EQ(r.production(), 2);
  EXPECT_EQ(loop.core.source_of("fashion")->registry_version, 2);
  loop.labelled_traffic(20, /*agree=*/false, 100);  // the scripted regression: version 2 is always wrong
  ASSERT_TRUE(loop.wait_for(control::State::kRolledBack, 30))
      << loop.controller->status().dump(2) << loop.core.guard_status()["guard"]["monitors"].dump(2);
  const auto status = loop.controller->status();
  EXPECT_NE(status["reason"].get<std::string>().find("watch.max_accuracy_drop"), std::string::npos) << status.dump(2);
  EXPECT_EQ(r.production(), 1);
  EXPECT_TRUE(eventually([&] { return loop.core.source_of("fashion")->registry_version == 1; }));
  bool rolled_back_event = false;
  for (const auto& e : loop.guard_events()) rolled_back_event = rolled_back_event || e.kind == "guard.rolled-back";
  EXPECT_TRUE(rolled_back_event);
  EXPECT_TRUE(r.audit_ok());
}

TEST(Control, AGuardKilledMidHardeningRestartsConsistent) {
  LoopRegistry r;
  const auto config = r.dir.file("guard.yaml");
  std::ofstream(config) << "serve:\n  registry: " << r.reg << "\n  model: {fashion: \"registry:m@production\"}\n"
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
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 12.0);
  EXPECT_EQ(loop.controller->state(), control::State::kFailed);
  EXPECT_NE(loop.controller->status()["reason"].get<std::string>().find("stopped during hardening"), std::string::npos);
  EXPECT_FALSE(fs::exists(r.reg + "/guard/jobs/" + job));
  const auto saved = json::parse(read_file(r.reg + "/guard/m.state.json"));
  EXPECT_EQ(saved["state"], "failed");
  EXPECT_EQ(r.production(), 1);
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
  EXPECT_EQ(error_of("hardening: {key: k}"), "accepted");
}

}  // namespace
}  // namespace bulwark::testing

