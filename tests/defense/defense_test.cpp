#include <gtest/gtest.h>

#include <torch/torch.h>

#include <map>
#include <stdexcept>

#include "attack/attack.h"
#include "core/error.h"
#include "data/dataset.h"
#include "defense/defense.h"
#include "model/zoo.h"
#include "test_util.h"
#include "train/train.h"

namespace bulwark::defense {
namespace {

using attack::bit_depth;
using attack::median_smoothing;
using attack::parse_squeezer;

const data::Dataset& train_set() {
  static const data::Dataset d = data::load_dataset("fashion-mnist", data::Split::kTrain).head(4000);
  return d;
}
const data::Dataset& test_set() {
  static const data::Dataset d = data::load_dataset("fashion-mnist", data::Split::kTest).head(300);
  return d;
}

// An undefended cnn-small, trained once per test binary.
const model::Model& baseline() {
  static const model::Model m = [] {
    auto base = model::create_model("cnn-small", model::default_spec(), 3);
    train::CrossEntropyObjective ce;
    train::fit(base, train_set(), {}, train::TrainOptions().epochs(4).batch_size(64).progress(false), ce);
    return base;
  }();
  return m;
}

double pgd10(const model::Model& m, double eps) {
  auto copy = m.clone();
  model::FrozenParameters frozen(copy);
  return pgd_accuracy(copy, {attack::Norm::kLinf, eps, 0, 1}, test_set().inputs(), test_set().targets(), 10, 0);
}

// A conv-BatchNorm classifier exported by Debian's PyTorch (fixtures/make_batchnorm_model.py),
// loaded fresh on each call. With blind_class >= 0 it can never predict that class.
model::Model batchnorm_model(int blind_class = -1) {
  static const testing::TempDir dir;
  static std::map<int, std::string> made;  // blind class -> archive
  if (!made.count(blind_class)) {
    const std::string sub = dir.file("blind" + std::to_string(blind_class));
    std::filesystem::create_directories(sub);
    const auto r = testing::run_command(std::string(testing::kPython) + " " + BULWARK_FIXTURES_DIR +
                                        "/make_batchnorm_model.py " + sub + " " + std::to_string(blind_class));
    if (r.exit_code != 0) throw std::runtime_error("make_batchnorm_model.py failed: " + r.output);
    made[blind_class] = sub + "/batchnorm_model.pt";
  }
  return model::Model::import_torchscript(made[blind_class], model::ModelSpec{});
}

// Copies of the model's buffers by name: bn.running_mean, bn.running_var, bn.num_batches_tracked, ...
std::map<std::string, torch::Tensor> buffers_of(model::Model& m) {
  std::map<std::string, torch::Tensor> out;
  for (const auto& b : m.module().named_buffers()) out[b.name] = b.value.detach().clone();
  return out;
}

// Answers "lit" (class 1) for an image with any pixel above 0, "blank" (0) otherwise, with a zero
// input gradient everywhere: PGD stays where its random start put it.
model::Model lit_detector() {
  torch::jit::Module module("__torch__.bulwark_test.LitDetector");
  module.define(R"(
def forward(self, x):
    flat = torch.flatten(x, 1)
    lit = torch.gt(flat.amax(1), 0.0).float().unsqueeze(1)
    return 10.0 * torch.cat([1.0 - lit, lit], 1) + 0.0 * flat.sum(1, keepdim=True)
)");
  return model::Model(module, model::default_spec(2));
}

HardenOptions small(const std::string& method) {
  HardenOptions o;
  o.method = method;
  o.threat.eps = 0.1;
  o.epochs = 3;
  o.batch_size = 64;
  o.pgd_steps = 3;
  o.validation_n = 200;
  o.progress = false;
  return o;
}

TEST(Trades, BetaZeroIsPlainCrossEntropy) {
  auto m = baseline().clone();
  const auto x = test_set().inputs(torch::arange(32)), y = test_set().targets(torch::arange(32));
  TradesObjective trades({{attack::Norm::kLinf, 0.1, 0, 1}, 0, 1}, /*beta=*/0.0);
  const auto out = trades.step(m, x, y, {0, 0, 1});
  const auto expected = torch::nn::functional::cross_entropy(m.logits(x), y);
  EXPECT_NEAR(out.loss.item<double>(), expected.item<double>(), 1e-6);
  // With beta > 0 the KL term is added, and it is non-negative.
  TradesObjective with_kl({{attack::Norm::kLinf, 0.1, 0, 1}, 0, 1}, /*beta=*/6.0, 3);
  EXPECT_GE(with_kl.step(m, x, y, {0, 0, 1}).loss.item<double>(), expected.item<double>() - 1e-6);
}

// The clean-loss weight mixes (1 - w) x adversarial CE with w x clean CE, in Fast-AT as in PGD-AT.
TEST(FastAt, CleanWeightMixesTheCleanLoss) {
  auto m = baseline().clone();
  const auto x = test_set().inputs(torch::arange(32)), y = test_set().targets(torch::arange(32));
  const AdversarialSettings s{{attack::Norm::kLinf, 0.1, 0, 1}, 0, 7};
  const double adv = FastAtObjective(s).step(m, x, y, {0, 0, 1}).loss.item<double>();
  const double clean = torch::nn::functional::cross_entropy(m.logits(x), y).item<double>();
  ASSERT_GT(adv, clean + 0.1);  // the baseline is not robust: its FGSM loss is well above the clean one
  EXPECT_NEAR(FastAtObjective(s, 1.25, true, 1.0).step(m, x, y, {0, 0, 1}).loss.item<double>(), clean, 1e-5);
  EXPECT_NEAR(FastAtObjective(s, 1.25, true, 0.25).step(m, x, y, {0, 0, 1}).loss.item<double>(),
              0.75 * adv + 0.25 * clean, 1e-4);
}

TEST(Harden, RaisesPgdAccuracyByTwentyPoints) {
  const double before = pgd10(baseline(), 0.1);
  auto m = baseline().clone();
  const auto split = data::split_train_validation(train_set(), 0.1, 0);
  const auto r = harden(m, split.train, split.validation, small("pgd-at"));
  const double after = pgd10(m, 0.1);
  EXPECT_GE(after, before + 0.20) << "PGD-10 accuracy before " << before << ", after " << after;
  EXPECT_EQ(r.train.epochs.size(), 3u);
  EXPECT_TRUE(r.train.epochs[0].extra.contains("pgd10_validation_accuracy"));
}

TEST(Harden, DeterministicGivenSeed) {
  const auto split = data::split_train_validation(train_set().head(600), 0.2, 0);
  auto run = [&](uint64_t seed) {
    auto m = baseline().clone();
    auto o = small("fast-at");
    o.epochs = 1;
    o.seed = seed;
    harden(m, split.train, split.validation, o);
    return m.predict_logits(test_set().inputs(torch::arange(20)));
  };
  EXPECT_TRUE(torch::equal(run(5), run(5)));
  EXPECT_FALSE(torch::equal(run(5), run(6)));
}

TEST(Harden, BudgetStopsAndKeepsTheBestCheckpoint) {
  const auto split = data::split_train_validation(train_set(), 0.1, 0);
  auto m = baseline().clone();
  auto o = small("pgd-at");
  o.epochs = 1000;
  o.budget_seconds = 4;
  const auto r = harden(m, split.train, split.validation, o);
  EXPECT_TRUE(r.train.stopped_by_budget);
  ASSERT_FALSE(r.train.epochs.empty());
  double best = -1;
  int64_t best_epoch = 0;
  for (const auto& e : r.train.epochs) {
    if (e.selection_score > best) {  // a budget-cut epoch is validated too, and may be the best
      best = e.selection_score;
      best_epoch = e.epoch;
    }
  }
  EXPECT_EQ(r.train.best_epoch, best_epoch);
}

// Large steps without a random start: the textbook recipe for catastrophic overfitting.
TEST(Harden, GuardCatchesCatastrophicOverfitting) {
  const auto split = data::split_train_validation(train_set(), 0.1, 0);
  auto m = baseline().clone();
  auto o = small("fast-at");
  o.threat.eps = 0.3;
  o.fast_alpha = 2.5;
  o.fast_random_init = false;
  o.warmup_epochs = 0;
  o.epochs = 6;
  o.lr = 3e-3;
  const auto r = harden(m, split.train, split.validation, o);
  std::string trace;
  for (const auto& e : r.train.epochs) trace += e.extra.dump() + "\n";
  ASSERT_FALSE(r.events.empty()) << "the guard did not fire:\n" << trace;
  EXPECT_NE(r.events[0].find("catastrophic overfitting"), std::string::npos);
  // The model kept is the pre-collapse checkpoint, not the collapsed one.
  double best_before_collapse = 0;
  for (const auto& e : r.train.epochs) {
    if (e.extra.contains("guard")) break;
    best_before_collapse = std::max(best_before_collapse, e.extra["pgd10_validation_accuracy"].get<double>());
  }
  auto copy = m.clone();
  model::FrozenParameters frozen(copy);
  const auto vx = split.validation.head(200).inputs(), vy = split.validation.head(200).targets();
  const double final_pgd = pgd_accuracy(copy, o.threat, vx, vy, 10, 0);
  EXPECT_GE(final_pgd, best_before_collapse - 0.1) << "final PGD accuracy collapsed";
}

// Validation on class 9 alone, which this model can never predict: every epoch scores 0, so epoch 1
// stays the best, and what epochs 2 and 3 did must be undone, BatchNorm statistics included.
TEST(Harden, KeepsTheBatchNormStatisticsOfTheBestCheckpoint) {
  const auto d = train_set().head(1000);
  const auto nine = d.labels.eq(9);
  const auto train = d.select(nine.logical_not().nonzero().squeeze(1)).head(256);
  const auto validation = d.select(nine.nonzero().squeeze(1));
  auto o = small("pgd-at");
  o.pgd_steps = 2;
  o.validation_n = 20;
  auto m = batchnorm_model(9);
  const auto fresh = buffers_of(m);
  const auto r = harden(m, train, validation, o);
  ASSERT_EQ(r.train.epochs.size(), 3u);
  ASSERT_EQ(r.train.best_epoch, 1);
  // Epoch 1 alone, replayed: the state the kept checkpoint must have.
  auto one = batchnorm_model(9);
  o.epochs = 1;
  harden(one, train, validation, o);
  const auto expected = buffers_of(one);
  ASSERT_FALSE(torch::equal(expected.at("bn.running_mean"), fresh.at("bn.running_mean")))
      << "epoch 1 did not train BatchNorm in train mode";
  for (const auto& [name, value] : buffers_of(m)) {
    EXPECT_TRUE(torch::allclose(value.to(torch::kDouble), expected.at(name).to(torch::kDouble), 1e-5, 1e-6))
        << name << ": " << value << " kept, epoch 1 had " << expected.at(name);
  }
  const auto params = m.parameters(), params1 = one.parameters();
  for (size_t i = 0; i < params.size(); ++i) EXPECT_TRUE(torch::allclose(params[i], params1[i], 1e-5, 1e-6));
}

// A point is robust only if the model gets it right clean and under attack (RobustBench,
// AutoAttack): blank images labelled "lit" are wrong clean, and stay wrong for the checkpoint
// score even where the attack's random start makes them look lit.
TEST(PgdAccuracy, CountsOnlyPointsRightCleanAndUnderAttack) {
  const auto m = lit_detector();
  const auto x = torch::cat({torch::zeros({8, 1, 28, 28}), torch::ones({8, 1, 28, 28})});
  const auto y = torch::ones({16}, torch::kLong);
  const attack::Threat t{attack::Norm::kLinf, 0.1, 0, 1};
  ASSERT_EQ(m.predict_logits(x).argmax(1).eq(y).sum().item<int64_t>(), 8) << "right on the lit half only";
  EXPECT_DOUBLE_EQ(pgd_accuracy(m, t, x, y, 10, 0), 0.5);
  // The same figure as `bulwark attack` reports.
  attack::SuiteOptions suite;
  suite.attacks = {"pgd"};
  suite.eps = {t.eps};
  suite.progress = false;
  suite.masking_checks = false;
  EXPECT_DOUBLE_EQ(attack::evaluate_robustness(attack::logits_of(m), x, y, suite).worst[0].robust_accuracy, 0.5);
}

// Robust validation judges the model in eval mode whatever mode it arrives in, and leaves its
// BatchNorm statistics and its mode alone.
TEST(Harden, ValidatesInEvalModeWhateverModeTheModelArrivesIn) {
  auto m = batchnorm_model();
  train::CrossEntropyObjective ce;
  train::fit(m, train_set().head(1000), {}, train::TrainOptions().epochs(1).batch_size(64).progress(false), ce);
  model::FrozenParameters frozen(m);
  const attack::Threat t{attack::Norm::kLinf, 0.05, 0, 1};
  const auto x = test_set().inputs(torch::arange(100)), y = test_set().targets(torch::arange(100));
  m.set_training(false);
  const double expected = pgd_accuracy(m, t, x, y, 10, 0);
  ASSERT_GT(expected, 0.0);
  m.set_training(true);
  const auto before = buffers_of(m);
  EXPECT_DOUBLE_EQ(pgd_accuracy(m, t, x, y, 10, 0), expected);
  for (const auto& [name, value] : buffers_of(m)) EXPECT_TRUE(torch::equal(value, before.at(name))) << name;
  EXPECT_TRUE(m.module().is_training());
}

TEST(Harden, BadOptionsNameTheFlag) {
  auto expect_flag = [](HardenOptions o, const std::string& flag) {
    try {
      o.validate();
      FAIL() << flag;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(flag), std::string::npos) << e.what();
    }
  };
  auto o = small("pgd-at");
  o.method = "mart";
  expect_flag(o, "--method");
  o = small("pgd-at");
  o.threat.eps = 0;
  expect_flag(o, "--eps");
  o = small("trades");
  o.trades_beta = -1;
  expect_flag(o, "--beta");
  o = small("pgd-at");
  o.pgd_steps = 0;
  expect_flag(o, "--steps");
  o = small("trades");
  o.clean_weight = 0.2;
  expect_flag(o, "--clean-weight");
  o = small("fast-at");
  o.clean_weight = 1.5;
  expect_flag(o, "--clean-weight");
  o = small("pgd-at");
  o.lr_schedule = "cosine";
  expect_flag(o, "--lr-schedule");
  EXPECT_EQ(small("fast-at").effective_lr_schedule(), "one-cycle");
  EXPECT_EQ(small("pgd-at").effective_lr_schedule(), "constant");
}

TEST(Squeeze, BitDepthAndMedianByHand) {
  const auto x = torch::tensor({0.0f, 0.2f, 0.4f, 0.6f, 0.8f, 1.0f}).view({1, 1, 2, 3});
  const auto q = bit_depth(1)(x);  // 2 levels: 0 or 1
  EXPECT_TRUE(torch::equal(q, torch::tensor({0.0f, 0.0f, 0.0f, 1.0f, 1.0f, 1.0f}).view({1, 1, 2, 3})));
  const auto spike = torch::zeros({1, 1, 5, 5}).index_put_({0, 0, 2, 2}, 1.0);
  EXPECT_EQ(median_smoothing(3)(spike).max().item<float>(), 0.0f) << "a lone spike is removed";
  const auto img = torch::rand({2, 1, 6, 6});
  EXPECT_EQ(median_smoothing(2)(img).sizes(), img.sizes());
  EXPECT_THROW(parse_squeezer("bits:0", 0, 1), Error);
  EXPECT_THROW(parse_squeezer("jpeg:50", 0, 1), Error);
  EXPECT_NO_THROW(parse_squeezer("bits:5+median:2", 0, 1));
}

// Squeezing looks robust to naive PGD; through BPDA the attack gets its gradient back.
TEST(Squeeze, BpdaDoesNotOverstateRobustness) {
  const auto& m = baseline();
  auto copy = m.clone();
  model::FrozenParameters frozen(copy);
  const auto base = attack::logits_of(copy);
  const auto squeeze = parse_squeezer("bits:2", 0, 1);
  const attack::LogitsFn naive = [&](const torch::Tensor& v) { return base(squeeze(v)); };
  attack::SuiteOptions o;
  o.attacks = {"pgd"};
  o.eps = {0.15};
  o.progress = false;
  o.masking_checks = false;
  const auto x = test_set().inputs(torch::arange(100)), y = test_set().targets(torch::arange(100));
  const auto plain = attack::evaluate_robustness(naive, x, y, o);
  const auto through = attack::evaluate_robustness(attack::bpda(base, squeeze), x, y, o);
  EXPECT_LT(through.worst[0].robust_accuracy, plain.worst[0].robust_accuracy);
}

}  // namespace
}  // namespace bulwark::defense
