// model/frozen_forward.h: the frozen, inference-optimized copy Square's queries run on. Its logits
// agree with Model::logits to float rounding, it sees the weights of the moment it was made, runs in
// eval mode without touching the model's own mode, and never records autograd.
#include "model/frozen_forward.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <string>

#include "model/model.h"
#include "model/zoo.h"
#include "test_util.h"

namespace bulwark::model {
namespace {

torch::Tensor eval_logits(const Model& m, const torch::Tensor& x) {
  torch::NoGradGuard no_grad;
  EvalMode eval(m);
  return m.logits(x);
}

// Within float rounding of the logits' scale, and the same predicted class wherever the top two
// logits are not within that rounding of each other.
void expect_close(const torch::Tensor& got, const torch::Tensor& want, const std::string& what) {
  ASSERT_EQ(got.sizes(), want.sizes()) << what;
  const double scale = want.abs().max().item<double>() + 1;
  EXPECT_LE((got - want).abs().max().item<double>(), 1e-5 * scale) << what;
  const auto top2 = std::get<0>(want.topk(2, 1));
  const auto clear = (top2.select(1, 0) - top2.select(1, 1)).gt(1e-4 * scale);
  EXPECT_TRUE(torch::equal(got.argmax(1).masked_select(clear), want.argmax(1).masked_select(clear))) << what;
}

TEST(FrozenForward, ZooCnnAgreesWithItsLogitsToRounding) {
  const Model m = create_model("cnn", default_spec(), 4);
  const FrozenForward frozen(m);
  EXPECT_TRUE(frozen.optimized());
  torch::manual_seed(2);
  for (int64_t n : {1, 7, 130}) {
    const auto x = torch::rand({n, 1, 28, 28});
    const auto z = frozen(x);
    EXPECT_FALSE(z.is_mkldnn());
    EXPECT_EQ(z.scalar_type(), torch::kFloat);
    expect_close(z, eval_logits(m, x), "batch " + std::to_string(n));
  }
}

TEST(FrozenForward, SeesTheWeightsOfTheMomentItWasMade) {
  Model m = create_model("cnn", default_spec(), 5);
  const auto x = torch::rand({4, 1, 28, 28});
  const auto before = eval_logits(m, x);
  const FrozenForward frozen(m);
  {
    torch::NoGradGuard no_grad;
    for (auto& p : m.parameters()) p.mul_(-0.5);
  }
  const auto after = eval_logits(m, x);
  ASSERT_FALSE(torch::allclose(after, before)) << "the model's weights did change";
  expect_close(frozen(x), before, "frozen after the model changed");
}

TEST(FrozenForward, RecordsNoAutogradEvenForAnInputThatRequiresIt) {
  const Model m = create_model("cnn-small", default_spec(), 6);
  const FrozenForward frozen(m);
  const auto x = torch::rand({3, 1, 28, 28}).requires_grad_(true);
  const auto z = frozen(x);
  EXPECT_FALSE(z.requires_grad());
  expect_close(z, eval_logits(m, x.detach()), "cnn-small");
}

// A PyTorch export with BatchNorm, in train mode: the frozen copy normalises with the running
// statistics (eval mode, BatchNorm folded into the convolution) and leaves the model in train mode.
TEST(FrozenForward, BatchNormModelInTrainModeRunsInEvalModeAndStaysInTrainMode) {
  testing::TempDir dir;
  const auto r = testing::run_command(std::string(testing::kPython) + " " + BULWARK_FIXTURES_DIR +
                                      "/make_batchnorm_model.py " + dir.path());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  Model m = Model::import_torchscript(dir.file("batchnorm_model.pt"), ModelSpec{});
  m.set_training(true);  // as during fine-tuning
  ASSERT_TRUE(m.module().is_training());
  const FrozenForward frozen(m);
  EXPECT_TRUE(frozen.optimized());
  EXPECT_TRUE(m.module().is_training());
  torch::manual_seed(3);
  const auto x = torch::rand({9, 1, 28, 28});
  expect_close(frozen(x), eval_logits(m, x), "batchnorm");
  EXPECT_TRUE(m.module().is_training());
}

}  // namespace
}  // namespace bulwark::model
