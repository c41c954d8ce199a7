// model/window_forward.h: logits of images that differ from cached ones inside one window. Over
// random windows (every size, on the borders too), random subsets of rows and random accepts, a
// query agrees with Model::logits of the same images to float rounding; models outside the chain
// it runs, or whose cache would pass its bound, are declined.
#include "model/window_forward.h"

#include <ATen/CPUGeneratorImpl.h>
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

void expect_close(const torch::Tensor& got, const torch::Tensor& want, const std::string& what) {
  ASSERT_EQ(got.sizes(), want.sizes()) << what;
  const double scale = want.abs().max().item<double>() + 1;
  EXPECT_LE((got - want).abs().max().item<double>(), 1e-5 * scale) << what;
}

int64_t uniform(torch::Generator& gen, int64_t lo, int64_t hi) {  // [lo, hi]
  return torch::randint(lo, hi + 1, {1}, gen).item<int64_t>();
}

// Square's use: a base, then queries on the rows still searched (fewer as points fall), each
// changing one window, and accepts of some of them; the test keeps the base images itself and
// checks every query against the model's logits of the same images.
void check_random_queries(const Model& m, int64_t n, int queries, uint64_t seed) {
  const auto& shape = m.spec().input_shape;
  const int64_t h = shape[1], w = shape[2];
  auto engine = WindowForward::create(m, n);
  ASSERT_NE(engine, nullptr);
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  auto base = torch::rand({n, shape[0], h, w}, gen);
  expect_close(engine->reset(base), eval_logits(m, base), "reset");
  auto rows = torch::arange(n);
  for (int q = 0; q < queries; ++q) {
    if (q % 9 == 8 && rows.numel() > 1) {  // a point falls
      const int64_t drop = uniform(gen, 0, rows.numel() - 1);
      rows = torch::cat({rows.narrow(0, 0, drop), rows.narrow(0, drop + 1, rows.numel() - drop - 1)});
    }
    const int64_t sh = q % 5 == 0 ? uniform(gen, 1, h) : uniform(gen, 1, 4);
    const int64_t sw = q % 7 == 0 ? uniform(gen, 1, w) : sh;
    const Window win{uniform(gen, 0, h - sh), uniform(gen, 0, w - sw), sh, sw};
    auto x = base.index_select(0, rows);
    x.narrow(2, win.top, win.height).narrow(3, win.left, win.width).uniform_(0, 1, gen);
    const std::string what = "query " + std::to_string(q) + " window " + std::to_string(win.top) + "," +
                             std::to_string(win.left) + " " + std::to_string(sh) + "x" + std::to_string(sw);
    expect_close(engine->query(rows, x, win), eval_logits(m, x), what);
    const auto take = torch::rand({rows.size(0)}, gen).lt(0.6);
    engine->accept(take);
    const auto hit = take.nonzero().squeeze(1);
    base.index_copy_(0, rows.index_select(0, hit), x.index_select(0, hit));
  }
  // After all the accepts, the cache is the kept base's: a query changing nothing gives its logits.
  const auto kept = base.index_select(0, rows);
  expect_close(engine->query(rows, kept, Window{0, 0, 1, 1}), eval_logits(m, kept), "final base");
  // A row the cache dropped cannot come back.
  if (rows.numel() < n) {
    EXPECT_THROW(engine->query(torch::arange(n), base, Window{0, 0, 1, 1}), std::logic_error);
  }
}

TEST(WindowForward, ZooCnnQueriesAgreeWithTheLogits) {
  const Model m = create_model("cnn", default_spec(), 4);
  // conv+relu, pool, conv+relu, pool over windows; flatten + fc1 updated from the change; the head in full.
  const auto engine = WindowForward::create(m, 1);
  ASSERT_NE(engine, nullptr);
  EXPECT_EQ(engine->window_layers(), 4u);
  EXPECT_TRUE(engine->incremental_head());
  // Enough accepting queries for the head's refresh (every kHeadRefreshEvery) to come round twice.
  check_random_queries(m, 9, 3 * WindowForward::kHeadRefreshEvery, 1);
}

TEST(WindowForward, ZooCnnSmallQueriesAgreeWithTheLogits) {
  // cnn-small: 4x4 convolutions with stride 2 and padding 1, no pool.
  check_random_queries(create_model("cnn-small", default_spec(), 5), 6, 30, 2);
}

// PyTorch exports: strided 5x5 convolution with padding 2, BatchNorm folded in, a convolution
// without bias, an overlapping 3x3/2 max-pool, a 2x2 convolution on an odd size, two linear layers;
// a residual block; a normalised input.
TEST(WindowForward, PyTorchExportedChainQueriesAgreeWithTheLogits) {
  testing::TempDir dir;
  const auto r = testing::run_command(std::string(testing::kPython) + " " + BULWARK_FIXTURES_DIR +
                                      "/make_window_model.py " + dir.path());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const Model m = Model::import_torchscript(dir.file("window_model.pt"), ModelSpec{});
  const auto engine = WindowForward::create(m, 1);
  ASSERT_NE(engine, nullptr);
  EXPECT_EQ(engine->window_layers(), 4u) << "conv1 (BatchNorm folded) + relu, conv2 + relu, pool, conv3 + relu";
  EXPECT_TRUE(engine->incremental_head());
  check_random_queries(m, 7, 40, 3);
  // A residual add reads the first ReLU's output twice: the chain stops there, the rest runs in full.
  const Model skip = Model::import_torchscript(dir.file("skip_model.pt"), ModelSpec{});
  const auto skip_engine = WindowForward::create(skip, 1);
  ASSERT_NE(skip_engine, nullptr);
  EXPECT_EQ(skip_engine->window_layers(), 1u);
  EXPECT_FALSE(skip_engine->incremental_head());
  check_random_queries(skip, 5, 20, 4);
  // Normalising the input before the first convolution: no chain to run incrementally.
  EXPECT_EQ(WindowForward::create(Model::import_torchscript(dir.file("norm_model.pt"), ModelSpec{}), 4), nullptr);
}

TEST(WindowForward, DeclinesModelsWithoutAConvolutionChainOrOverItsCacheBound) {
  EXPECT_EQ(WindowForward::create(create_model("mlp", default_spec(), 1), 4), nullptr);
  const Model cnn = create_model("cnn", default_spec(), 1);
  auto engine = WindowForward::create(cnn, 1);
  ASSERT_NE(engine, nullptr);
  const int64_t over = WindowForward::kMaxCacheBytes / engine->cache_bytes_per_image() + 1;
  EXPECT_EQ(WindowForward::create(cnn, over), nullptr);
  EXPECT_NE(WindowForward::create(cnn, over - 1), nullptr);
}

// The engine sees the weights of the moment it was made, like the frozen copy.
TEST(WindowForward, SeesTheWeightsOfTheMomentItWasMade) {
  Model m = create_model("cnn", default_spec(), 6);
  const auto x = torch::rand({3, 1, 28, 28});
  const auto before = eval_logits(m, x);
  auto engine = WindowForward::create(m, 3);
  ASSERT_NE(engine, nullptr);
  {
    torch::NoGradGuard no_grad;
    for (auto& p : m.parameters()) p.mul_(-0.5);
  }
  ASSERT_FALSE(torch::allclose(eval_logits(m, x), before));
  expect_close(engine->reset(x), before, "after the model changed");
}

}  // namespace
}  // namespace bulwark::model
