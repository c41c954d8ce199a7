#include <gtest/gtest.h>

#include <torch/torch.h>

#include <map>
#include <stdexcept>

#include "core/error.h"
#include "data/dataset.h"
#include "model/zoo.h"
#include "test_util.h"
#include "train/train.h"

namespace bulwark::train {
namespace {

const data::Dataset& fashion_train() {
  static const data::Dataset d = data::load_dataset("fashion-mnist", data::Split::kTrain);
  return d;
}
const data::Dataset& fashion_test() {
  static const data::Dataset d = data::load_dataset("fashion-mnist", data::Split::kTest);
  return d;
}

model::Model fresh(const std::string& arch, uint64_t seed) {
  model::ModelSpec spec = model::default_spec();
  spec.class_names = fashion_train().class_names;
  return model::create_model(arch, spec, seed);
}

// A conv-BatchNorm classifier exported by Debian's PyTorch (fixtures/make_batchnorm_model.py),
// loaded fresh on each call; the script runs once per test binary.
model::Model batchnorm_model() {
  static const testing::TempDir dir;
  static const bool made = [] {
    const auto r = testing::run_command(std::string(testing::kPython) + " " + BULWARK_FIXTURES_DIR +
                                        "/make_batchnorm_model.py " + dir.path());
    if (r.exit_code != 0) throw std::runtime_error("make_batchnorm_model.py failed: " + r.output);
    return true;
  }();
  (void)made;
  return model::Model::import_torchscript(dir.file("batchnorm_model.pt"), model::ModelSpec{});
}

// Copies of the model's buffers by name: bn.running_mean, bn.running_var, bn.num_batches_tracked, ...
std::map<std::string, torch::Tensor> buffers_of(model::Model& m) {
  std::map<std::string, torch::Tensor> out;
  for (const auto& b : m.module().named_buffers()) out[b.name] = b.value.detach().clone();
  return out;
}

TEST(Train, ShortRunOn2kImagesReaches75PercentOn1kTest) {
  torch::set_num_threads(2);
  auto m = fresh("cnn-small", 0);
  CrossEntropyObjective ce;
  const auto result = fit(m, fashion_train().head(2000), {}, TrainOptions().epochs(6).batch_size(64).progress(false), ce);
  ASSERT_EQ(result.epochs.size(), 6u);
  EXPECT_LT(result.epochs.back().train_loss, result.epochs.front().train_loss);
  const auto eval = evaluate(m, fashion_test().head(1000));
  EXPECT_GE(eval.accuracy(), 0.75) << "test accuracy " << eval.accuracy();
}

TEST(Train, DeterministicGivenSeed) {
  const auto subset = fashion_train().head(600);
  auto run = [&](uint64_t seed) {
    auto m = fresh("mlp", seed);
    CrossEntropyObjective ce;
    fit(m, subset, {}, TrainOptions().epochs(1).batch_size(50).seed(seed).progress(false), ce);
    return m.predict_logits(fashion_test().inputs(torch::arange(20)));
  };
  EXPECT_TRUE(torch::equal(run(3), run(3)));
  EXPECT_FALSE(torch::equal(run(3), run(4)));
}

// Training runs with channels-last conv weights by default (TrainOptions::channels_last) and hands
// the model back in NCHW, as it is saved; the run equals an NCHW run up to rounding.
TEST(Train, ChannelsLastRunEqualsTheNchwRunToRoundingAndEndsInNchw) {
  const auto subset = fashion_train().head(256);
  auto run = [&](bool channels_last) {
    auto m = fresh("cnn", 1);
    CrossEntropyObjective ce;
    fit(m, subset, {}, TrainOptions().epochs(1).batch_size(64).channels_last(channels_last).progress(false), ce);
    return m;
  };
  EXPECT_TRUE(TrainOptions().channels_last());
  auto cl = run(true), nchw = run(false);
  const auto pc = cl.parameters(), pn = nchw.parameters();
  ASSERT_EQ(pc.size(), pn.size());
  bool differ = false;  // the sums ran in another order somewhere: the run did use channels-last
  for (size_t i = 0; i < pc.size(); ++i) {
    differ = differ || !torch::equal(pc[i], pn[i]);
    if (pc[i].dim() == 4) {
      EXPECT_EQ(pc[i].suggest_memory_format(), at::MemoryFormat::Contiguous);
    }
    EXPECT_TRUE(torch::allclose(pc[i], pn[i], 1e-4, 1e-4)) << "parameter " << i << ": " << (pc[i] - pn[i]).abs().max();
  }
  EXPECT_TRUE(differ);
  EXPECT_EQ(TrainOptions().to_json()["memory_format"], "channels_last");
  EXPECT_EQ(TrainOptions().channels_last(false).to_json()["memory_format"], "contiguous");
}

TEST(Train, KeepsTheBestValidationEpoch) {
  auto m = fresh("mlp", 1);
  CrossEntropyObjective ce;
  const auto split = data::split_train_validation(fashion_train().head(1000), 0.2, 1);
  int calls = 0;
  // The hook decides selection: prefer epoch 1 by scoring later epochs lower.
  std::vector<torch::Tensor> epoch1;
  const auto result = fit(m, split.train, split.validation, TrainOptions().epochs(3).progress(false), ce,
                          [&](model::Model& mm, EpochStats& s) {
                            ++calls;
                            s.selection_score = -static_cast<double>(s.epoch);
                            if (s.epoch == 1) {
                              for (const auto& p : mm.parameters()) epoch1.push_back(p.detach().clone());
                            }
                          });
  EXPECT_EQ(calls, 3);
  EXPECT_EQ(result.best_epoch, 1);
  const auto params = m.parameters();
  for (size_t i = 0; i < params.size(); ++i) EXPECT_TRUE(torch::equal(params[i], epoch1[i]));
}

// The best checkpoint is the whole state of the model: BatchNorm's running statistics and batch
// count come back with the weights instead of staying as the last epoch left them.
TEST(Train, BestCheckpointRestoresBatchNormStatistics) {
  auto m = batchnorm_model();
  CrossEntropyObjective ce;
  const auto split = data::split_train_validation(fashion_train().head(600), 0.2, 1);
  std::map<std::string, torch::Tensor> epoch1, epoch3;
  const auto result = fit(m, split.train, split.validation, TrainOptions().epochs(3).batch_size(64).progress(false), ce,
                          [&](model::Model& mm, EpochStats& s) {
                            s.selection_score = -static_cast<double>(s.epoch);  // epoch 1 is the best
                            if (s.epoch == 1) epoch1 = buffers_of(mm);
                            if (s.epoch == 3) epoch3 = buffers_of(mm);
                          });
  ASSERT_EQ(result.best_epoch, 1);
  ASSERT_EQ(epoch1.count("bn.running_mean"), 1u);
  ASSERT_FALSE(torch::equal(epoch1["bn.running_mean"], epoch3["bn.running_mean"])) << "epochs 2-3 changed nothing";
  const auto kept = buffers_of(m);
  ASSERT_EQ(kept.size(), epoch1.size());
  for (const auto& [name, value] : kept) EXPECT_TRUE(torch::equal(value, epoch1[name])) << name;
}

// Weight averaging (TrainOptions::ema_decay) on a BatchNorm model, one step per epoch: the model
// judged after each epoch is the average of the iterates of a run without averaging (so training
// itself went on from the raw weights) by the warm-up rule d_t = min(decay, (1 + t) / (10 + t)),
// float buffers averaged and integer ones copied; the model returned is the last average.
TEST(Train, WeightAverageIsTheWarmedUpEmaOfTheIterates) {
  torch::set_num_threads(1);
  const auto data = fashion_train().head(256);
  const auto opts = TrainOptions().epochs(10).batch_size(256).lr(1e-2).progress(false);
  CrossEntropyObjective ce;
  auto raw = batchnorm_model();
  const model::ModelState start = raw.snapshot();
  std::vector<model::ModelState> iterates, averages;
  fit(raw, data, {}, opts, ce, [&](model::Model& mm, EpochStats&) { iterates.push_back(mm.snapshot()); });
  auto averaged = batchnorm_model();
  fit(averaged, data, {}, TrainOptions(opts).ema_decay(0.5), ce,
      [&](model::Model& mm, EpochStats&) { averages.push_back(mm.snapshot()); });
  ASSERT_EQ(iterates.size(), 10u);
  ASSERT_EQ(averages.size(), 10u);
  ASSERT_FALSE(start.buffers.empty());
  model::ModelState expect = start;
  for (size_t t = 1; t <= 10; ++t) {
    // t = 8, 9, 10 reach the decay itself (9/18 = 0.5); before, the warm-up is smaller.
    const double d = std::min(0.5, (1.0 + static_cast<double>(t)) / (10.0 + static_cast<double>(t)));
    const model::ModelState& w = iterates[t - 1];
    for (size_t i = 0; i < expect.parameters.size(); ++i) {
      expect.parameters[i] = expect.parameters[i] * d + w.parameters[i] * (1.0 - d);
      EXPECT_TRUE(torch::allclose(averages[t - 1].parameters[i], expect.parameters[i], 1e-5, 1e-6))
          << "step " << t << " parameter " << i;
    }
    for (size_t i = 0; i < expect.buffers.size(); ++i) {
      expect.buffers[i] = expect.buffers[i].is_floating_point()
                              ? expect.buffers[i] * d + w.buffers[i] * (1.0 - d)
                              : w.buffers[i].clone();
      EXPECT_TRUE(torch::allclose(averages[t - 1].buffers[i].to(torch::kFloat64),
                                  expect.buffers[i].to(torch::kFloat64), 1e-5, 1e-6))
          << "step " << t << " buffer " << i;
    }
  }
  // Not vacuous: the average is neither the last iterate nor the start.
  EXPECT_GT((averages.back().parameters[0] - iterates.back().parameters[0]).abs().max().item<double>(), 1e-4);
  EXPECT_GT((averages.back().parameters[0] - start.parameters[0]).abs().max().item<double>(), 1e-4);
  const model::ModelState returned = averaged.snapshot();
  for (size_t i = 0; i < returned.parameters.size(); ++i) {
    EXPECT_TRUE(torch::equal(returned.parameters[i], averages.back().parameters[i])) << i;
  }
  EXPECT_THROW(TrainOptions().ema_decay(0.2), Error);  // names --ema
  EXPECT_THROW(TrainOptions().ema_decay(1.0), Error);
}

// A hook that rolls the model back (harden's catastrophic-overfitting guard) replaces the average
// too: training then goes on from the rolled-back weights, and the average does not keep mixing in
// the weights it rolled back from.
TEST(Train, ARollBackByTheHookResetsTheWeightAverage) {
  torch::set_num_threads(1);
  auto m = batchnorm_model();
  const model::ModelState start = m.snapshot();
  CrossEntropyObjective ce;
  model::ModelState before_rollback;
  fit(m, fashion_train().head(256), {}, TrainOptions().epochs(3).batch_size(256).lr(1e-2).ema_decay(0.5).progress(false),
      ce, [&](model::Model& mm, EpochStats& s) {
        if (s.epoch < 3) return;
        before_rollback = mm.snapshot();  // the average of three steps
        mm.restore(start);
        s.model_replaced = true;
      });
  // Not vacuous: the average had moved away from the start.
  ASSERT_FALSE(before_rollback.parameters.empty());
  EXPECT_GT((before_rollback.parameters[0] - start.parameters[0]).abs().max().item<double>(), 1e-4);
  // No validation set: the model returned is the run's average, which the roll-back reset.
  const model::ModelState end = m.snapshot();
  for (size_t i = 0; i < end.parameters.size(); ++i) EXPECT_TRUE(torch::equal(end.parameters[i], start.parameters[i])) << i;
  for (size_t i = 0; i < end.buffers.size(); ++i) EXPECT_TRUE(torch::equal(end.buffers[i], start.buffers[i])) << i;
}

// A model's recorded recipe reads back as the options it was trained with.
TEST(Options, RecipeRoundTripsAndAMissingKeyIsNamed) {
  const auto o = TrainOptions().epochs(7).batch_size(32).lr(0.05).optimizer("sgd").weight_decay(5e-4)
                     .validation_fraction(0.1).cyclic_lr(true).augment(true).channels_last(false).ema_decay(0.999);
  const auto back = TrainOptions::from_recipe(o.to_json());
  EXPECT_EQ(back.to_json(), o.to_json());
  auto old = o.to_json();
  old.erase("ema_decay");  // recorded before weight averaging existed: trained without it
  EXPECT_EQ(TrainOptions::from_recipe(old).ema_decay(), 0.0);
  old.erase("lr");
  try {
    TrainOptions::from_recipe(old);
    ADD_FAILURE() << "a recipe without lr was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("options.lr"), std::string::npos) << e.what();
  }
}

TEST(Train, BudgetStopsEarly) {
  auto m = fresh("mlp", 1);
  CrossEntropyObjective ce;
  const auto result =
      fit(m, fashion_train().head(2000), {}, TrainOptions().epochs(1000).budget_seconds(0.5).progress(false), ce);
  EXPECT_TRUE(result.stopped_by_budget);
  EXPECT_LT(result.epochs.size(), 1000u);
}

TEST(Train, RejectsWrongInputShape) {
  model::ModelSpec spec = model::default_spec();
  spec.input_shape = {1, 16, 16};
  auto m = model::create_model("mlp", spec, 0);
  CrossEntropyObjective ce;
  EXPECT_THROW(fit(m, fashion_train().head(10), {}, TrainOptions().progress(false), ce), Error);
}

TEST(Options, ValidationNamesTheFlag) {
  auto expect_flag = [](auto&& set, const std::string& flag) {
    try {
      set();
      FAIL() << flag;
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::kInvalidArgument);
      EXPECT_NE(std::string(e.what()).find(flag), std::string::npos) << e.what();
    }
  };
  expect_flag([] { TrainOptions().epochs(0); }, "--epochs");
  expect_flag([] { TrainOptions().batch_size(-1); }, "--batch");
  expect_flag([] { TrainOptions().lr(0); }, "--lr");
  expect_flag([] { TrainOptions().lr(std::nan("")); }, "--lr");
  expect_flag([] { TrainOptions().validation_fraction(0.95); }, "--val-fraction");
}

TEST(Options, OneCycleScheduleRisesPeaksAndFallsToZero) {
  const auto o = TrainOptions().lr(0.01).cyclic_lr(true);
  EXPECT_DOUBLE_EQ(o.lr_at(0, 100), 0.0);
  EXPECT_DOUBLE_EQ(o.lr_at(20, 100), 0.005);
  EXPECT_DOUBLE_EQ(o.lr_at(40, 100), 0.01);
  EXPECT_NEAR(o.lr_at(70, 100), 0.005, 1e-12);
  EXPECT_DOUBLE_EQ(o.lr_at(100, 100), 0.0);
  EXPECT_DOUBLE_EQ(TrainOptions().lr(0.01).lr_at(70, 100), 0.01);  // constant
}

TEST(Options, OneCycleUnderABudgetFollowsTheClockWhenItIsAhead) {
  const auto o = TrainOptions().lr(0.01).cyclic_lr(true).budget_seconds(100);
  // 10 % of the steps but 70 % of the time: the clock decides.
  EXPECT_NEAR(o.lr_at(10, 100, 70.0), 0.005, 1e-12);
  // Steps ahead of the clock: the steps decide.
  EXPECT_NEAR(o.lr_at(70, 100, 10.0), 0.005, 1e-12);
  // Past the budget the rate is 0, never negative.
  EXPECT_DOUBLE_EQ(o.lr_at(10, 100, 250.0), 0.0);
}

TEST(Evaluate, ConfusionMatrixAgreesWithAccuracy) {
  auto m = fresh("mlp", 2);
  const auto test = fashion_test().head(300);
  const auto r = evaluate(m, test, 64);
  int64_t total = 0, diagonal = 0;
  for (size_t t = 0; t < r.confusion.size(); ++t) {
    for (size_t p = 0; p < r.confusion.size(); ++p) total += r.confusion[t][p];
    diagonal += r.confusion[t][t];
  }
  EXPECT_EQ(total, 300);
  EXPECT_EQ(diagonal, r.correct);
  const double direct = accuracy_of(m.predict_logits(test.inputs()), test.targets());
  EXPECT_DOUBLE_EQ(r.accuracy(), direct);
}

// Evaluation runs the model in eval mode whatever mode it arrives in: BatchNorm normalises with its
// running statistics and leaves them alone, and the model goes back in its own mode.
TEST(Evaluate, RunsInEvalModeWhateverModeTheModelArrivesIn) {
  auto m = batchnorm_model();
  CrossEntropyObjective ce;
  fit(m, fashion_train().head(600), {}, TrainOptions().epochs(1).batch_size(64).progress(false), ce);
  const auto test = fashion_test().head(300);
  m.set_training(false);
  const auto expected = evaluate(m, test, 100);
  m.set_training(true);
  const auto before = buffers_of(m);
  const auto r = evaluate(m, test, 100);
  EXPECT_EQ(r.confusion, expected.confusion);
  for (const auto& [name, value] : buffers_of(m)) EXPECT_TRUE(torch::equal(value, before.at(name))) << name;
  EXPECT_TRUE(m.module().is_training());
}

}  // namespace
}  // namespace bulwark::train
