// `bulwark train` and `bulwark harden` as real data-parallel jobs: two processes on loopback,
// configured the way launchers do it (torchrun's variables, Kubeflow Trainer's PET_*, --dist-*
// flags), against one process; and what a dead or hung rank does to the other.
#include <gtest/gtest.h>
#include <signal.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <thread>

#include "model/model.h"
#include "rank_process.h"
#include "test_util.h"

namespace bulwark::testing {
namespace {

using Env = std::vector<std::pair<std::string, std::string>>;

const std::vector<std::string> kTrainArgs = {
    "--seed",   "3", "--threads", "1",  "--json",         "train", "--model",      "cnn-small", "--limit", "231",
    "--epochs", "1", "--batch",   "64", "--val-fraction", "0.1",   "--test-limit", "50",        "--quiet"};

std::vector<std::string> with(std::vector<std::string> args, const std::vector<std::string>& more) {
  args.insert(args.end(), more.begin(), more.end());
  return args;
}

// Runs both ranks to completion (each within `deadline_s`); returns their exit codes.
std::pair<int, int> run_pair(RankProcess& r0, RankProcess& r1, double deadline_s = 240) {
  const auto c0 = r0.wait_exit(deadline_s);
  const auto c1 = r1.wait_exit(deadline_s);
  EXPECT_TRUE(c0.has_value()) << "rank 0 still running:\n" << r0.output();
  EXPECT_TRUE(c1.has_value()) << "rank 1 still running:\n" << r1.output();
  return {c0.value_or(-2), c1.value_or(-2)};
}

void expect_same_parameters(const std::string& want_path, const std::string& got_path) {
  const auto want = model::Model::load(want_path).parameters();
  const auto got = model::Model::load(got_path).parameters();
  ASSERT_EQ(want.size(), got.size());
  for (size_t i = 0; i < want.size(); ++i) {
    const double diff = (want[i] - got[i]).abs().max().item<double>();
    EXPECT_LT(diff, 2e-5) << "parameter " << i << " differs by " << diff;
  }
}

// A one-process `bulwark train` of kTrainArgs, once per test binary: the reference and the base
// model that the harden tests start from.
const std::string& single_process_model() {
  static const TempDir dir;
  static const std::string path = [] {
    const std::string out = dir.file("single.pt");
    RankProcess p(with(kTrainArgs, {"--out", out}), {}, dir.file("single.log"));
    const auto code = p.wait_exit(240);
    if (code != 0) throw std::runtime_error("single-process train failed:\n" + p.output());
    return out;
  }();
  return path;
}

TEST(DistCli, TrainOnTwoRanksWithTorchrunVariablesMatchesOneProcess) {
  const auto& want = single_process_model();
  TempDir dir;
  const int port = free_port();
  RankProcess r0(with(kTrainArgs, {"--out", dir.file("dist.pt")}), torchrun_env(port, 2, 0), dir.file("r0.log"));
  RankProcess r1(with(kTrainArgs, {"--out", dir.file("dist.pt")}), torchrun_env(port, 2, 1), dir.file("r1.log"));
  const auto [c0, c1] = run_pair(r0, r1);
  ASSERT_EQ(c0, 0) << r0.output();
  ASSERT_EQ(c1, 0) << r1.output();
  EXPECT_NE(r0.output().find("\"world_size\": 2"), std::string::npos) << r0.output();
  EXPECT_NE(r1.output().find("rank 1 of 2: done"), std::string::npos) << r1.output();
  EXPECT_EQ(r1.output().find("test_accuracy"), std::string::npos) << "only rank 0 reports:\n" << r1.output();
  expect_same_parameters(want, dir.file("dist.pt"));
}

const std::vector<std::string> kHardenArgs = {"--seed", "4",       "--threads", "1",        "harden", "--method",
                                              "pgd-at", "--eps",   "0.1",       "--steps",  "3",      "--epochs",
                                              "1",      "--batch", "64",        "--limit",  "231",    "--val-fraction",
                                              "0.1",    "--val-n", "20",        "--eval-n", "20",     "--warmup-epochs",
                                              "0",      "--quiet"};

TEST(DistCli, HardenPgdAtOnTwoRanksWithTrainerVariablesMatchesOneProcess) {
  const auto& base = single_process_model();
  TempDir dir;
  RankProcess single(with(kHardenArgs, {"--model", base, "--out", dir.file("single.pt")}), {}, dir.file("single.log"));
  ASSERT_EQ(single.wait_exit(240), std::optional<int>(0)) << single.output();

  const int port = free_port();
  const auto trainer_env = [port](int rank) {
    return Env{{"PET_MASTER_ADDR", "127.0.0.1"},
               {"PET_MASTER_PORT", std::to_string(port)},
               {"PET_NNODES", "2"},
               {"PET_NODE_RANK", std::to_string(rank)},
               {"PET_NPROC_PER_NODE", "2"}};
  };
  const auto args = with(kHardenArgs, {"--model", base, "--out", dir.file("dist.pt")});
  RankProcess r0(args, trainer_env(0), dir.file("r0.log"));
  RankProcess r1(args, trainer_env(1), dir.file("r1.log"));
  const auto [c0, c1] = run_pair(r0, r1);
  ASSERT_EQ(c0, 0) << r0.output();
  ASSERT_EQ(c1, 0) << r1.output();
  EXPECT_NE(r0.output().find("ranks"), std::string::npos) << r0.output();
  expect_same_parameters(dir.file("single.pt"), dir.file("dist.pt"));
}

// A harden job long enough to be killed in the middle of: minutes unless something stops it.
std::vector<std::string> long_harden(const std::string& base, const std::string& out, int port, int rank,
                                     double timeout_s) {
  return {"--threads",
          "1",
          "harden",
          "--model",
          base,
          "--out",
          out,
          "--method",
          "pgd-at",
          "--eps",
          "0.1",
          "--steps",
          "2",
          "--epochs",
          "20",
          "--batch",
          "64",
          "--limit",
          "20000",
          "--val-n",
          "20",
          "--eval-n",
          "20",
          "--dist-master-addr",
          "127.0.0.1",
          "--dist-master-port",
          std::to_string(port),
          "--dist-world-size",
          "2",
          "--dist-rank",
          std::to_string(rank),
          "--dist-timeout-s",
          std::to_string(timeout_s)};
}

// Both ranks past the rendezvous and, a few seconds later, into training (progress bars print
// one line per epoch into a log, too late to wait for).
void wait_until_training(RankProcess& r0, RankProcess& r1) {
  const auto joined = [&] {
    return r0.output().find("rendezvous at") != std::string::npos &&
           r1.output().find("rendezvous at") != std::string::npos;
  };
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (!joined() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_TRUE(joined()) << r0.output() << "\n" << r1.output();
  std::this_thread::sleep_for(std::chrono::seconds(8));
  ASSERT_FALSE(r0.wait_exit(0).has_value()) << r0.output();
  ASSERT_FALSE(r1.wait_exit(0).has_value()) << r1.output();
}

struct FailureCase {
  int victim;  // the rank killed or stopped
  int sig;
  double timeout_s;
  std::string expected;  // in the survivor's message
};

void expect_survivor_fails(const FailureCase& fc) {
  const auto& base = single_process_model();
  TempDir dir;
  const int port = free_port();
  RankProcess r0(long_harden(base, dir.file("out.pt"), port, 0, fc.timeout_s), {}, dir.file("r0.log"));
  RankProcess r1(long_harden(base, dir.file("out.pt"), port, 1, fc.timeout_s), {}, dir.file("r1.log"));
  wait_until_training(r0, r1);
  RankProcess& victim = fc.victim == 0 ? r0 : r1;
  RankProcess& survivor = fc.victim == 0 ? r1 : r0;
  victim.signal(fc.sig);
  const auto t0 = std::chrono::steady_clock::now();
  const auto code = survivor.wait_exit(60);
  const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_TRUE(code.has_value()) << "rank " << 1 - fc.victim << " still running 60 s after rank " << fc.victim
                                << " got signal " << fc.sig << ":\n"
                                << survivor.output();
  EXPECT_EQ(*code, 1) << survivor.output();
  const std::string out = survivor.output();
  const std::string who = "rank " + std::to_string(1 - fc.victim) + " of 2";
  EXPECT_NE(out.find(who), std::string::npos) << out;
  EXPECT_NE(out.find("peer rank " + std::to_string(fc.victim)), std::string::npos) << out;
  EXPECT_NE(out.find(fc.expected), std::string::npos) << out;
  std::cerr << "rank " << 1 - fc.victim << " exited " << *code << " " << waited
            << " s after the signal: " << out.substr(out.rfind("error:")) << std::flush;
  victim.signal(SIGKILL);
}

TEST(DistCli, KilledRankOneEndsRankZeroWithAnError) { expect_survivor_fails({1, SIGKILL, 30, "failed"}); }

TEST(DistCli, KilledRankZeroEndsRankOneWithAnError) { expect_survivor_fails({0, SIGKILL, 30, "failed"}); }

TEST(DistCli, HungRankTimesOutInsteadOfHanging) {
  // SIGSTOP: the peer's sockets stay open, so only the timeout can end the wait.
  expect_survivor_fails({1, SIGSTOP, 5, "did not answer within 5 s"});
}

TEST(DistCli, RanksWithDifferentDataRefuseToTrain) {
  TempDir dir;
  const int port = free_port();
  auto args = kTrainArgs;
  RankProcess r0(with(args, {"--out", dir.file("x.pt")}), torchrun_env(port, 2, 0), dir.file("r0.log"));
  args[std::find(args.begin(), args.end(), "--limit") - args.begin() + 1] = "300";
  RankProcess r1(with(args, {"--out", dir.file("x.pt")}), torchrun_env(port, 2, 1), dir.file("r1.log"));
  const auto [c0, c1] = run_pair(r0, r1);
  EXPECT_EQ(c0, 2) << r0.output();
  EXPECT_EQ(c1, 2) << r1.output();
  EXPECT_NE(r1.output().find("ranks disagree: training images 270 here, 208 on rank 0"), std::string::npos)
      << r1.output();
}

TEST(DistCli, BadLauncherVariableIsAUsageError) {
  TempDir dir;
  RankProcess p(with(kTrainArgs, {"--out", dir.file("x.pt")}),
                {{"WORLD_SIZE", "2"}, {"RANK", "7"}, {"MASTER_ADDR", "127.0.0.1"}}, dir.file("p.log"));
  EXPECT_EQ(p.wait_exit(60), std::optional<int>(2)) << p.output();
  EXPECT_NE(p.output().find("RANK=7 must be in 0..1"), std::string::npos) << p.output();
}

}  // namespace
}  // namespace bulwark::testing
