// Black-box tests of the real `bulwark` binary: exit codes, messages, and a tiny end-to-end run.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "core/system.h"
#include "defense/harden.h"
#include "test_util.h"

namespace bulwark {
namespace {

using testing::run_command;

testing::CommandResult bulwark(const std::string& args) { return run_command(std::string(BULWARK_BIN) + " " + args); }

void expect_usage_error(const std::string& args, const std::string& flag) {
  const auto r = bulwark(args);
  EXPECT_EQ(r.exit_code, 2) << args << "\n" << r.output;
  EXPECT_NE(r.output.find(flag), std::string::npos) << "message does not name " << flag << ": " << r.output;
}

TEST(Cli, VersionReportsLibTorchAndBlas) {
  const auto r = bulwark("--version");
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_NE(r.output.find("libtorch 1.13"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("blas "), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("none loaded"), std::string::npos) << r.output;
}

// As in PyTorch, OMP_NUM_THREADS sets the default intra-op thread count; --threads overrides it, and
// a value that is not a positive whole number is ignored (all cores).
TEST(Cli, ThreadsDefaultToOmpNumThreads) {
  const auto threads = [](const std::string& env, const std::string& flags = "") {
    const std::string out = run_command(env + " " + BULWARK_BIN + " " + flags + " --version").output;
    const auto at = out.find("(CPU, ");
    return at == std::string::npos ? std::string("no thread count in: " + out) : out.substr(at, out.find(')', at) - at + 1);
  };
  EXPECT_EQ(threads("OMP_NUM_THREADS=3"), "(CPU, 3 threads)");
  EXPECT_EQ(threads("OMP_NUM_THREADS=3", "--threads 5"), "(CPU, 5 threads)");
  const std::string all = threads("env -u OMP_NUM_THREADS");
  EXPECT_EQ(all, "(CPU, " + std::to_string(hardware_threads()) + " threads)");
  EXPECT_EQ(threads("OMP_NUM_THREADS=two"), all);
  EXPECT_EQ(threads("OMP_NUM_THREADS=0"), all);
}

TEST(Cli, HelpOnEverySubcommand) {
  for (const std::string cmd : {"", "train ", "eval ", "info ", "attack "}) {
    const auto r = bulwark(cmd + "--help");
    EXPECT_EQ(r.exit_code, 0) << cmd;
    EXPECT_NE(r.output.find("Usage"), std::string::npos) << cmd;
  }
}

TEST(Cli, BadUsageExitsTwoNamingTheFlag) {
  expect_usage_error("", "command is required");
  expect_usage_error("frobnicate", "frobnicate");
  expect_usage_error("train --out /tmp/x.pt --epochs abc", "--epochs");
  expect_usage_error("train --out /tmp/x.pt --epochs 0", "--epochs");
  expect_usage_error("train --out /tmp/x.pt --lr -1", "--lr");
  expect_usage_error("train --epochs 1", "--out");
  expect_usage_error("train --out /tmp/x.pt --model resnet", "--model");
  expect_usage_error("train --out /tmp/x.pt --bogus 3", "--bogus");
  expect_usage_error("train --out /tmp/x.pt --limit 0", "--limit");
  expect_usage_error("--threads 0 info x.pt", "--threads");
  expect_usage_error("train --out /tmp/x.pt --limit 999999", "--limit");
  expect_usage_error("eval", "--model");
}

TEST(Cli, FailuresExitOneNamingTheFile) {
  const auto r = bulwark("info /no/such/model.pt");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("/no/such/model.pt"), std::string::npos) << r.output;
  const auto d = bulwark("eval --model /no/such/model.pt");
  EXPECT_EQ(d.exit_code, 1);
}

TEST(Cli, TrainInfoEvalEndToEnd) {
  testing::TempDir dir;
  const auto model = dir.file("m.pt");
  const auto t = bulwark("--json --seed 4 train --model mlp --epochs 1 --limit 400 --test-limit 200 --quiet --out " + model);
  ASSERT_EQ(t.exit_code, 0) << t.output;
  const auto trained = nlohmann::json::parse(t.output);
  EXPECT_EQ(trained["test_images"], 200);
  EXPECT_EQ(trained["seed"], 4);

  const auto i = bulwark("--json info " + model);
  ASSERT_EQ(i.exit_code, 0) << i.output;
  const auto info = nlohmann::json::parse(i.output);
  EXPECT_EQ(info["arch"], "mlp");
  EXPECT_EQ(info["dataset"], "fashion-mnist");
  EXPECT_EQ(info["training"]["test_accuracy"], trained["test_accuracy"]);

  const auto e = bulwark("--json eval --model " + model + " --limit 200");
  ASSERT_EQ(e.exit_code, 0) << e.output;
  const auto eval = nlohmann::json::parse(e.output);
  EXPECT_EQ(eval["n"], 200);
  EXPECT_DOUBLE_EQ(eval["accuracy"].get<double>(), trained["test_accuracy"].get<double>());
  EXPECT_EQ(eval["confusion"].size(), 10u);

  const auto human = bulwark("eval --model " + model + " --limit 200");
  EXPECT_NE(human.output.find("confusion matrix"), std::string::npos) << human.output;
  expect_usage_error("eval --model " + model + " --split dev", "--split");
}

// One small model shared by the attack CLI tests.
const std::string& small_model() {
  static testing::TempDir dir;
  static const std::string path = [] {
    const auto p = dir.file("small.pt");
    const auto r = bulwark("--seed 1 train --model cnn-small --epochs 2 --limit 2000 --test-limit 100 --quiet --out " + p);
    EXPECT_EQ(r.exit_code, 0) << r.output;
    return p;
  }();
  return path;
}

TEST(CliAttack, BadArgumentsExitTwoNamingTheFlag) {
  const std::string m = " --model " + small_model();
  expect_usage_error("attack" + m + " --eps -0.1", "--eps");
  expect_usage_error("attack" + m + " --eps 0.1,x", "--eps");
  expect_usage_error("attack" + m + " --attacks pgd,deepfool", "--attacks");
  expect_usage_error("attack" + m + " --norm l1", "--norm");
  expect_usage_error("attack" + m + " --n 20000", "--n");
  expect_usage_error("attack" + m + " --n 0", "--n");
  expect_usage_error("attack" + m + " --steps 0 --attacks pgd", "--steps");
  expect_usage_error("attack" + m + " --queries 0 --attacks square", "--queries");
  expect_usage_error("attack" + m + " --precision fp16", "--precision");
  expect_usage_error("attack --attacks pgd", "--model");
}

TEST(CliAttack, JsonReportAndSavedAdversarials) {
  testing::TempDir dir;
  const auto adv = dir.file("adv.pt");
  const auto r = bulwark("--json attack --model " + small_model() +
                         " --attacks fgsm,pgd --eps 0.05,0.2 --n 80 --quiet --save-adv " + adv);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto j = nlohmann::json::parse(r.output);
  ASSERT_EQ(j["results"].size(), 4u);
  EXPECT_EQ(j["n"], 80);
  EXPECT_EQ(j["precision"], "fp32");
  for (int e = 0; e < 2; ++e) {
    const auto& fgsm = j["results"][2 * e];
    const auto& pgd = j["results"][2 * e + 1];
    EXPECT_EQ(fgsm["attack"], "fgsm");
    EXPECT_LE(pgd["robust_accuracy"].get<double>(), fgsm["robust_accuracy"].get<double>());
    EXPECT_LE(pgd["max_norm"].get<double>(), pgd["eps"].get<double>() + 1e-6);
  }
  EXPECT_TRUE(j["warnings"].is_array());
  const auto py = run_command(std::string(testing::kPython) + " -c \"import torch; d = torch.load('" + adv +
                              "'); print(tuple(d['adv_eps_0.2'].shape), tuple(d['x'].shape))\"");
  ASSERT_EQ(py.exit_code, 0) << py.output;
  EXPECT_NE(py.output.find("(80, 1, 28, 28) (80, 1, 28, 28)"), std::string::npos) << py.output;
}

}  // namespace
}  // namespace bulwark

namespace bulwark {
namespace {

TEST(CliHarden, ProgressShowsCleanAndRobustValidationPerEpoch) {
  testing::TempDir dir;
  const auto out = dir.file("robust.pt");
  // No --quiet: the per-epoch line is what the user sees.
  const auto r = bulwark("--json harden --model " + small_model() +
                         " --method fast-at --epochs 2 --limit 600 --val-n 50 --eval-n 50 --lr-schedule one-cycle"
                         " --out " + out);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  for (const std::string epoch : {"epoch 1/2", "epoch 2/2"}) {
    const auto at = r.output.find(epoch);
    ASSERT_NE(at, std::string::npos) << r.output;
    const auto line = r.output.substr(at, r.output.find('\n', at) - at);
    EXPECT_NE(line.find("val acc"), std::string::npos) << line;
    EXPECT_NE(line.find("pgd10 "), std::string::npos) << line;
  }
  const auto info = bulwark("--json info " + out);
  ASSERT_EQ(info.exit_code, 0) << info.output;
  const auto j = nlohmann::json::parse(info.output);
  EXPECT_EQ(j["hardening"]["options"]["lr_schedule"], "one-cycle");
  expect_usage_error("harden --model " + small_model() + " --out " + out + " --lr-schedule cosine", "--lr-schedule");
}


// --preset fills the recipe (method, epochs, schedule, averaging, budget) and a flag given beside it
// wins; the saved model's spec records both the preset and what actually ran.
TEST(CliHarden, APresetFillsTheRecipeAndExplicitFlagsOverrideIt) {
  testing::TempDir dir;
  const auto out = dir.file("robust.pt");
  const auto& loop = defense::find_harden_preset("loop");
  const auto r = bulwark("--json harden --model " + small_model() + " --preset loop --epochs 1 --limit 300 --val-n 30"
                         " --eval-n 30 --quiet --out " + out);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto j = nlohmann::json::parse(bulwark("--json info " + out).output)["hardening"]["options"];
  EXPECT_EQ(j["preset"], "loop");
  EXPECT_EQ(j["epochs"], 1);  // given
  EXPECT_EQ(j["method"], loop.method);
  EXPECT_EQ(j["lr_schedule"], loop.lr_schedule);
  EXPECT_EQ(j["ema_decay"], loop.ema_decay);
  EXPECT_EQ(j["clean_weight"], loop.clean_weight);
  EXPECT_DOUBLE_EQ(j["budget_seconds"].get<double>(), loop.budget_minutes * 60);
  expect_usage_error("harden --model " + small_model() + " --out " + out + " --preset fastest", "--preset");
  EXPECT_NE(bulwark("harden --model " + small_model() + " --out " + out + " --preset fastest").output.find("loop"),
            std::string::npos);
}

TEST(CliDetect, BadArgumentsExitTwoNamingTheFlag) {
  const std::string out = testing::TempDir().file("m.detect");
  expect_usage_error("detect calibrate --model " + small_model() + " --out " + out + " --fpr 0.9", "--fpr");
  expect_usage_error("detect calibrate --model " + small_model() + " --out " + out + " --detectors lid", "--detectors");
  expect_usage_error("detect calibrate --model " + small_model(), "--out");
  expect_usage_error("detect", "subcommand");
  const auto missing = bulwark("detect calibrate --model /no/such.pt --out " + out);
  EXPECT_EQ(missing.exit_code, 1) << missing.output;
  EXPECT_NE(missing.output.find("/no/such.pt"), std::string::npos) << missing.output;
}

// Calibrate, evaluate on a few points, and refuse the calibration for a retrained model.
TEST(CliDetect, CalibrateEvaluateAndRefuseAnotherModel) {
  testing::TempDir dir;
  const auto cal = dir.file("small.detect");
  const auto c = bulwark("--json detect calibrate --model " + small_model() + " --detectors max-softmax,pca --fpr 0.05 --fit-n 1000 --out " + cal);
  ASSERT_EQ(c.exit_code, 0) << c.output;
  const auto cj = nlohmann::json::parse(c.output);
  EXPECT_EQ(cj["detectors"], nlohmann::json::array({"max-softmax", "pca"}));
  EXPECT_EQ(cj["reference_points"], 3000);  // the 5 % validation split of the 60,000 training images
  const auto e = bulwark("--json detect evaluate --model " + small_model() + " --calibration " + cal +
                         " --attacks fgsm --n 60 --adaptive-steps 5 --quiet");
  ASSERT_EQ(e.exit_code, 0) << e.output;
  const auto ej = nlohmann::json::parse(e.output);
  EXPECT_EQ(ej["n"], 60);
  // fgsm x (2 detectors + combined), then adaptive x (2 targets + combined).
  ASSERT_EQ(ej["rows"].size(), 6u) << ej.dump();
  for (const auto& row : ej["rows"]) {
    EXPECT_GE(row["auroc"].get<double>(), 0.0);
    EXPECT_LE(row["auroc"].get<double>(), 1.0);
  }
  EXPECT_TRUE(ej["rows"][5].contains("evasion"));
  const auto other = dir.file("other.pt");
  ASSERT_EQ(bulwark("--seed 2 train --model mlp --epochs 1 --limit 300 --test-limit 50 --quiet --out " + other).exit_code, 0);
  const auto refused = bulwark("detect evaluate --model " + other + " --calibration " + cal + " --n 10 --quiet");
  EXPECT_EQ(refused.exit_code, 2) << refused.output;
  EXPECT_NE(refused.output.find("another model"), std::string::npos) << refused.output;
}

}  // namespace
}  // namespace bulwark
