// Two ranks as two threads of this process, each with a real ProcessGroupGloo over a real
// TCPStore on loopback, against one process on the same global batches: the parameters after
// the same steps agree to float rounding, for plain cross-entropy and for PGD-AT.
//
// Why the comparison can be exact: the zoo models have no BatchNorm or dropout, so a sample's
// loss and input gradient depend on that sample alone; the losses are means, and each rank's
// gradient is weighted by its share of the global batch before the sum; the PGD random start
// of each sample is the same draw a single process makes (StepContext::shard_offset). What is
// left is summation order, i.e. float rounding.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <functional>
#include <memory>
#include <thread>

#include "data/dataset.h"
#include "defense/objectives.h"
#include "dist/group.h"
#include "model/zoo.h"
#include "rank_process.h"
#include "train/train.h"

namespace bulwark::train {
namespace {

const data::Dataset& fashion_train() {
  static const data::Dataset d = data::load_dataset("fashion-mnist", data::Split::kTrain);
  return d;
}

model::Model fresh(uint64_t seed) {
  model::ModelSpec spec = model::default_spec();
  spec.class_names = fashion_train().class_names;
  return model::create_model("cnn-small", spec, seed);
}

using MakeObjective = std::function<std::unique_ptr<Objective>()>;

// 231 images in global batches of 64: three even batches and a last one of 39 (20 + 19 rows).
TrainOptions options() { return TrainOptions().epochs(2).batch_size(64).seed(5).progress(false); }
data::Dataset subset() { return fashion_train().head(231); }

std::vector<torch::Tensor> single_process(const MakeObjective& make) {
  auto m = fresh(1);
  auto objective = make();
  fit(m, subset(), {}, options(), *objective);
  return m.parameters();
}

struct RankRun {
  std::vector<torch::Tensor> parameters;
  TrainResult result;
  std::string error;
};

std::vector<RankRun> two_ranks(const MakeObjective& make) {
  const int port = testing::free_port();
  std::vector<RankRun> runs(2);
  // Rank 1 starts from other weights: fit must begin with rank 0's. Built here, one after the
  // other: the zoo seeds LibTorch's global generator.
  std::vector<model::Model> models = {fresh(1), fresh(99)};
  const auto rank_main = [&](int rank) {
    try {
      dist::Config c;
      c.world_size = 2;
      c.rank = rank;
      c.master_port = port;
      c.timeout_s = 60;
      auto group = dist::Group::connect(c);
      auto& m = models[static_cast<size_t>(rank)];
      auto objective = make();
      runs[rank].result = fit(m, subset(), {}, options().process_group(group), *objective);
      runs[rank].parameters = m.parameters();
    } catch (const std::exception& e) {
      runs[rank].error = e.what();
    }
  };
  std::thread r1(rank_main, 1);
  rank_main(0);
  r1.join();
  return runs;
}

void expect_same_parameters(const std::vector<torch::Tensor>& want, const std::vector<torch::Tensor>& got) {
  ASSERT_EQ(want.size(), got.size());
  for (size_t i = 0; i < want.size(); ++i) {
    const double diff = (want[i] - got[i]).abs().max().item<double>();
    EXPECT_LT(diff, 2e-5) << "parameter " << i << " differs by " << diff;
  }
}

void check_parity(const MakeObjective& make) {
  torch::set_num_threads(1);
  const auto want = single_process(make);
  const auto runs = two_ranks(make);
  ASSERT_EQ(runs[0].error, "");
  ASSERT_EQ(runs[1].error, "");
  expect_same_parameters(want, runs[0].parameters);
  // Both ranks apply the same summed gradient to the same weights: bit for bit the same model.
  for (size_t i = 0; i < want.size(); ++i) EXPECT_TRUE(torch::equal(runs[0].parameters[i], runs[1].parameters[i]));
  EXPECT_EQ(runs[0].result.world_size, 2);
  ASSERT_EQ(runs[0].result.epochs.size(), 2u);
  // Totals are over the global batch: every image once per epoch.
  EXPECT_NEAR(runs[0].result.epochs[0].train_loss, runs[1].result.epochs[0].train_loss, 1e-12);
}

TEST(DataParallel, CrossEntropyMatchesOneProcess) {
  check_parity([] { return std::make_unique<CrossEntropyObjective>(); });
}

TEST(DataParallel, PgdAtMatchesOneProcess) {
  check_parity([] {
    defense::AdversarialSettings s{attack::Threat{attack::Norm::kLinf, 0.1, 0.0, 1.0}, 0.5, 11};
    return std::make_unique<defense::PgdAtObjective>(s, 3);
  });
}

}  // namespace
}  // namespace bulwark::train
