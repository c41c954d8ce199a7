#include <gtest/gtest.h>

#include <torch/torch.h>

#include "attack/attack.h"
#include "core/error.h"
#include "data/dataset.h"
#include "defense/defense.h"
#include "model/zoo.h"
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
