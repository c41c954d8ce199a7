// The forward-graph rewrites (model/forward_graph.h) and their max-pool kernel (model/max_pool.h)
// change speed only: logits, input gradients and parameter gradients are compared bit for bit with
// the untouched module as LibTorch runs it, on the zoo and on a model exported by PyTorch.
#include <ATen/autocast_mode.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <string>
#include <vector>

#include "model/max_pool.h"
#include "model/model.h"
#include "model/zoo.h"
#include "test_util.h"

namespace bulwark::model {
namespace {

using testing::TempDir;

struct Pass {
  torch::Tensor logits;
  std::vector<torch::Tensor> grads;  // d loss / d input, then d loss / d each parameter
};

// One forward and backward: through Model::logits (the rewritten graph) or the module's own forward.
Pass run(const Model& m, const torch::Tensor& x, const torch::Tensor& y, bool rewritten) {
  auto xr = x.clone().requires_grad_(true);
  auto z = rewritten ? m.logits(xr) : const_cast<Model&>(m).module().forward({xr}).toTensor();
  auto loss = torch::nn::functional::cross_entropy(z.to(torch::kFloat), y);
  std::vector<torch::Tensor> wrt{xr};
  for (const auto& p : m.parameters()) wrt.push_back(p);
  return {z.detach(), torch::autograd::grad({loss}, wrt)};
}

// Inputs where windows tie: random pixels, three grey levels, and an all-zero image (every window of
// every plane ties, and relu of a negative bias gives all zeros).
std::vector<torch::Tensor> probe_inputs(int64_t n) {
  torch::manual_seed(5);
  return {torch::rand({n, 1, 28, 28}), torch::round(torch::rand({n, 1, 28, 28}) * 2) / 2, torch::zeros({n, 1, 28, 28})};
}

void expect_same_passes(const Model& m, const std::string& what) {
  const auto y = torch::arange(6) % 10;
  for (const auto& x : probe_inputs(6)) {
    const auto ours = run(m, x, y, true);
    const auto theirs = run(m, x, y, false);
    EXPECT_TRUE(torch::equal(ours.logits, theirs.logits)) << what;
    ASSERT_EQ(ours.grads.size(), theirs.grads.size());
    for (size_t i = 0; i < ours.grads.size(); ++i) {
      EXPECT_TRUE(torch::equal(ours.grads[i], theirs.grads[i])) << what << ": gradient " << i;
    }
  }
}

TEST(ForwardGraph, ZooCnnRunsRewrittenWithIdenticalLogitsAndGradients) {
  const Model m = create_model("cnn", default_spec(), 3);
  // Two relu -> pool pairs: both relus move after their pool, both pools run our kernel.
  EXPECT_EQ(m.forward_graph_rewrites(), 4);
  expect_same_passes(m, "cnn");
}

TEST(ForwardGraph, ModelsWithoutMaxPoolRunTheirOwnForward) {
  EXPECT_EQ(create_model("mlp", default_spec(), 1).forward_graph_rewrites(), 0);
  EXPECT_EQ(create_model("cnn-small", default_spec(), 1).forward_graph_rewrites(), 0);
}

// A PyTorch model with an in-place ReLU module before an overlapping padded pool, F.relu before pools
// on odd sizes, a relu whose output a skip connection also reads (it must stay before its pool), a
// ceil_mode pool (ATen's kernel) and BatchNorm, in eval and in train mode, in fp32 and under bf16
// autocast (the attacks' --precision bf16).
TEST(ForwardGraph, PyTorchModelKeepsEveryBitInEveryMode) {
  TempDir dir;
  const auto r = testing::run_command(std::string(testing::kPython) + " " + BULWARK_FIXTURES_DIR +
                                      "/make_pool_model.py " + dir.path());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  Model m = Model::load(dir.file("pool_model.pt"));
  // Four pools on our kernel (the ceil_mode one hands itself to ATen at run time); three relus move.
  EXPECT_EQ(m.forward_graph_rewrites(), 7);
  expect_same_passes(m, "eval");

  m.set_training(true);  // BatchNorm normalises with batch statistics, read from the flag at run time
  expect_same_passes(m, "train");
  m.set_training(false);

  at::autocast::set_cpu_enabled(true);
  at::autocast::set_autocast_cpu_dtype(at::kBFloat16);
  expect_same_passes(m, "bf16 autocast");
  at::autocast::clear_cache();
  at::autocast::set_cpu_enabled(false);
}

TEST(ForwardGraph, SavedModelKeepsTheModulesOwnGraph) {
  TempDir dir;
  const Model m = create_model("cnn", default_spec(), 3);
  ASSERT_GT(m.forward_graph_rewrites(), 0);
  (void)m.logits(torch::rand({2, 1, 28, 28}));
  m.save(dir.file("m.pt"));
  Model back = Model::load(dir.file("m.pt"));
  std::ostringstream graph;
  graph << *back.module().get_method("features").graph();
  EXPECT_NE(graph.str().find("aten::max_pool2d"), std::string::npos) << graph.str();
  EXPECT_EQ(graph.str().find("bulwark::"), std::string::npos) << graph.str();
}

// Values compared as bits, NaN included.
torch::Tensor bits(const torch::Tensor& t) {
  return t.scalar_type() == torch::kBFloat16 ? t.contiguous().view(torch::kInt16) : t.contiguous().view(torch::kInt32);
}

// The kernel against ATen's over the geometries it covers, with NaN, infinities, signed zeros and ties
// in the windows: the same output bits.
TEST(MaxPool, MatchesAtenBitForBitOverGeometriesAndSpecialValues) {
  torch::manual_seed(9);
  torch::NoGradGuard no_grad;
  int checked = 0;
  for (const auto dtype : {torch::kFloat}) {
    for (int64_t k = 1; k <= 3; ++k) {
      for (int64_t s = 1; s <= 3; ++s) {
        for (int64_t p = 0; p <= k / 2; ++p) {
          for (const int64_t h : {5, 8}) {
            auto x = torch::round(torch::randn({2, 3, h, h + 1}) * 2) / 2;  // halves, -0.0 among them: many ties
            x.index_put_({0, 0, 1, 1}, std::nan(""));
            x.index_put_({0, 1, 0, 0}, -INFINITY);
            x.index_put_({0, 1, 0, 1}, -INFINITY);
            x.index_put_({1, 2, 2, 2}, INFINITY);
            x.index_put_({1, 0, 0, 0}, -0.0);
            x.index_put_({1, 0, 0, 1}, 0.0);
            x = x.to(dtype);
            const std::vector<int64_t> ks{k, k}, ss{s, s}, ps{p, p};
            ASSERT_TRUE(fast_max_pool2d_covers(x, ks, ss, ps, {1, 1}, false));
            const auto ours = fast_max_pool2d(x, ks, ss, ps);
            const auto aten = torch::max_pool2d(x, ks, ss, ps);
            const std::string where = "k" + std::to_string(k) + " s" + std::to_string(s) + " p" + std::to_string(p) +
                                      " h" + std::to_string(h) + " " + std::string(c10::toString(dtype));
            ASSERT_EQ(ours.sizes(), aten.sizes()) << where;
            EXPECT_TRUE(torch::equal(bits(ours), bits(aten))) << where;
            ++checked;
          }
        }
      }
    }
  }
  EXPECT_EQ(checked, 3 * 2 * 2 + 3 * 2 * 2 + 3 * 1 * 2);  // k=1: p 0; k=2,3: p 0,1
}

TEST(MaxPool, HandsWhatItDoesNotCoverToAten) {
  const auto x = torch::randn({2, 3, 9, 9});
  EXPECT_FALSE(fast_max_pool2d_covers(x, {2, 2}, {2, 2}, {0, 0}, {2, 2}, false));  // dilation
  EXPECT_FALSE(fast_max_pool2d_covers(x, {2, 2}, {2, 2}, {0, 0}, {1, 1}, true));   // ceil_mode
  EXPECT_FALSE(fast_max_pool2d_covers(x.to(torch::kDouble), {2, 2}, {}, {0}, {1}, false));
  EXPECT_FALSE(fast_max_pool2d_covers(x.to(torch::kBFloat16), {2, 2}, {}, {0}, {1}, false));
  EXPECT_FALSE(fast_max_pool2d_covers(x.contiguous(at::MemoryFormat::ChannelsLast), {2, 2}, {}, {0}, {1}, false));
  const auto leaf = x.clone().requires_grad_(true);  // under autograd: ATen's, whose indices make the backward cheap
  EXPECT_FALSE(fast_max_pool2d_covers(leaf, {2, 2}, {}, {0}, {1}, false));
  {
    torch::NoGradGuard no_grad;
    EXPECT_TRUE(fast_max_pool2d_covers(leaf, {2, 2}, {}, {0}, {1}, false));
  }
  EXPECT_TRUE(fast_max_pool2d_covers(x, {2}, {}, {0}, {1}, false));  // stride defaults to the kernel
  // Handed over, the results are ATen's, errors included.
  EXPECT_TRUE(torch::equal(fast_max_pool2d(x, {2, 2}, {2, 2}, {0, 0}, {2, 2}),
                           torch::max_pool2d(x, {2, 2}, {2, 2}, {0, 0}, {2, 2})));
  EXPECT_THROW(fast_max_pool2d(x, {2, 2}, {2, 2}, {2, 2}), c10::Error);  // padding over half the kernel
}

}  // namespace
}  // namespace bulwark::model
