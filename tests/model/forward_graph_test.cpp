// The forward-graph rewrites (model/forward_graph.h) and their max-pool kernel (model/max_pool.h)
// change speed only: logits, input gradients and parameter gradients are compared bit for bit with
// the untouched module as LibTorch runs it, on the zoo and on a model exported by PyTorch. The
// one-input-channel convolution's input gradient of channels-last passes (model/conv2d.h) is
// compared with ATen's to rounding.
#include <ATen/autocast_mode.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <string>
#include <vector>

#include "model/conv2d.h"
#include "model/conv_pool.h"
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

// Logits and every gradient equal to float rounding (channels-last passes: sums in another order).
void expect_same_to_rounding(const Pass& ours, const Pass& theirs) {
  EXPECT_TRUE(torch::allclose(ours.logits, theirs.logits, 1e-5, 1e-5));
  ASSERT_EQ(ours.grads.size(), theirs.grads.size());
  for (size_t i = 0; i < ours.grads.size(); ++i) {
    const double scale = theirs.grads[i].abs().max().item<double>();
    EXPECT_LE((ours.grads[i] - theirs.grads[i]).abs().max().item<double>(), 1e-5 * std::max(scale, 1e-6))
        << "gradient " << i;
  }
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
  // Two relu -> pool pairs: both relus move after their pool, both pools run our kernel; both
  // convolutions run as bulwark::conv2d, and each with its pool as bulwark::conv2d_max_pool2d.
  EXPECT_EQ(m.forward_graph_rewrites(), 8);
  expect_same_passes(m, "cnn");
}

TEST(ForwardGraph, ModelsWithoutPoolsOrConvolutionsRunTheirOwnForward) {
  EXPECT_EQ(create_model("mlp", default_spec(), 1).forward_graph_rewrites(), 0);
  const Model small = create_model("cnn-small", default_spec(), 1);
  EXPECT_EQ(small.forward_graph_rewrites(), 2);  // its two convolutions, and no pool
  expect_same_passes(small, "cnn-small");
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
  Model m = Model::import_torchscript(dir.file("pool_model.pt"), ModelSpec{});
  // Four pools on our kernel (the ceil_mode one hands itself to ATen at run time); three relus
  // move; four convolutions (conv3 runs twice).
  EXPECT_EQ(m.forward_graph_rewrites(), 13);
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

// A channels-last gradient pass (attack::logits_of's): the first convolution and its pool run fused
// (model/conv_pool.h), so logits, the input gradient and the parameter gradients equal the module's
// to rounding. In NCHW and without a gradient ATen runs (the tests above).
TEST(ForwardGraph, ChannelsLastPassesRunTheFirstLayerFused) {
  const Model m = create_model("cnn", default_spec(), 3);
  const auto y = torch::arange(6) % 10;
  for (const auto& x : probe_inputs(6)) {
    const auto cl = channels_last(x);
    {
      const auto probe = cl.clone(at::MemoryFormat::ChannelsLast).requires_grad_(true);
      const auto w = const_cast<Model&>(m).module().attr("conv1_weight").toTensor();
      EXPECT_TRUE(own_conv2d_input_gradient(probe, w, {1, 1}, {1, 1}, {1, 1}, 1));
      torch::NoGradGuard no_grad;
      EXPECT_FALSE(own_conv2d_input_gradient(probe, w, {1, 1}, {1, 1}, {1, 1}, 1));
      EXPECT_FALSE(own_conv2d_input_gradient(x.clone().requires_grad_(true), w, {1, 1}, {1, 1}, {1, 1}, 1));
    }
    {
      const auto probe = cl.clone(at::MemoryFormat::ChannelsLast).requires_grad_(true);
      const auto w = const_cast<Model&>(m).module().attr("conv1_weight").toTensor();
      const auto b = const_cast<Model&>(m).module().attr("conv1_bias").toTensor();
      EXPECT_TRUE(
          fused_conv2d_max_pool2d(probe, w, b, {1, 1}, {1, 1}, {1, 1}, 1, {2, 2}, {2, 2}, {0, 0}, {1, 1}, false));
    }
    const auto ours = run(m, cl, y, true);
    const auto theirs = run(m, cl, y, false);
    expect_same_to_rounding(ours, theirs);
    EXPECT_GT(ours.grads[0].abs().max().item<double>(), 0.0);
  }
}

// aten::conv2d has a second overload whose padding is a string ("same", "valid"); it keeps ATen's
// operator (bulwark::conv2d's schema takes numbers), and the model runs, with and without gradients.
TEST(ForwardGraph, StringPaddingConvolutionKeepsAtensOperator) {
  torch::jit::Module module("SamePadding");
  module.register_parameter("w1", torch::randn({4, 1, 3, 3}).requires_grad_(true), false);
  module.register_parameter("w2", (torch::randn({10, 4, 28, 28}) * 0.01).requires_grad_(true), false);
  module.define(R"(
def forward(self, x):
    x = torch.relu(torch.conv2d(x, self.w1, None, [1, 1], "same"))
    return torch.flatten(torch.conv2d(x, self.w2, None, [1, 1], [0, 0]), 1)
)");
  const Model m(module, default_spec());
  EXPECT_EQ(m.forward_graph_rewrites(), 1);  // the second convolution only
  const auto y = torch::arange(6) % 10;
  for (const auto& x : probe_inputs(6)) {
    const auto ours = run(m, x, y, true), theirs = run(m, x, y, false);
    EXPECT_TRUE(torch::equal(ours.logits, theirs.logits));
    EXPECT_TRUE(torch::equal(ours.grads[0], theirs.grads[0]));
    const auto cl = run(m, channels_last(x), y, true);
    EXPECT_TRUE(torch::allclose(cl.grads[0], theirs.grads[0], 1e-5, 1e-6));
  }
}

// Bias-less one-channel convolutions (PyTorch models put them before batch norm), one fused with its
// pool and one not, and a convolution a pool and a slice both read (not fused: the pool is not its
// only reader): a channels-last gradient pass equals the module's to rounding. (An absent bias once
// reached autograd::Function::apply as an undefined tensor, which it rejects.)
TEST(ForwardGraph, BiasLessOneChannelConvolutionsRunInChannelsLastPasses) {
  torch::manual_seed(8);
  torch::jit::Module module("NoBias");
  module.register_parameter("w1", torch::randn({6, 1, 3, 3}).requires_grad_(true), false);
  module.register_parameter("w2", torch::randn({4, 1, 3, 3}).requires_grad_(true), false);
  module.register_parameter("w4", torch::randn({4, 1, 3, 3}).requires_grad_(true), false);
  module.register_parameter("w3", (torch::randn({10, 18 * 14 * 14}) * 0.01).requires_grad_(true), false);
  module.define(R"(
def forward(self, x):
    a = torch.max_pool2d(torch.conv2d(x, self.w1, None, [1, 1], [1, 1]), [2, 2])
    b = torch.conv2d(x, self.w2, None, [2, 2], [1, 1])
    d = torch.conv2d(x, self.w4, None, [1, 1], [1, 1])
    e = torch.max_pool2d(d, [2, 2])
    f = d[:, :, ::2, ::2]
    return torch.matmul(torch.flatten(torch.relu(torch.cat([a, b, e, f], 1)), 1), self.w3.t())
)");
  const Model m(module, default_spec());
  EXPECT_EQ(m.forward_graph_rewrites(), 6);  // three convolutions, two pools, one fused pair
  const auto y = torch::arange(6) % 10;
  for (const auto& x : probe_inputs(6)) {
    const auto ours = run(m, channels_last(x), y, true), theirs = run(m, x, y, false);
    expect_same_to_rounding(ours, theirs);
  }
}

// The kernel against ATen's backward-data pass over the geometries it covers: kernels up to 16
// taps, strides, paddings, asymmetric ones, output-channel counts that fill its 4-pixel blocks and
// leave tails, and a grad_output in NCHW (it is made channels-last first).
TEST(Conv2d, SingleChannelInputGradientEqualsAtensToRounding) {
  torch::manual_seed(11);
  struct Geo {
    int64_t kh, kw, sh, sw, ph, pw, h, w;
  };
  int checked = 0;
  for (const Geo& g : {Geo{3, 3, 1, 1, 1, 1, 28, 28}, Geo{1, 1, 1, 1, 0, 0, 9, 10}, Geo{4, 4, 2, 2, 1, 1, 28, 28},
                       Geo{3, 3, 2, 2, 0, 0, 11, 13}, Geo{2, 3, 1, 2, 0, 1, 10, 9}, Geo{4, 4, 3, 3, 2, 2, 7, 7}}) {
    for (const int64_t c : {1, 7, 32}) {
      const auto x = channels_last(torch::rand({3, 1, g.h, g.w}));
      const auto weight = torch::randn({c, 1, g.kh, g.kw});
      const std::vector<int64_t> stride{g.sh, g.sw}, padding{g.ph, g.pw};
      const auto out = torch::conv2d(x, weight, {}, stride, padding);
      for (const bool nchw_grad : {false, true}) {
        auto grad = torch::randn(out.sizes());
        if (!nchw_grad) grad = channels_last(grad);
        const auto aten = std::get<0>(at::convolution_backward(grad, x, weight, c10::nullopt, stride, padding, {1, 1},
                                                               false, {0, 0}, 1, {true, false, false}));
        const auto ours = single_channel_input_gradient(grad, weight, g.h, g.w, stride, padding);
        const std::string where = "k" + std::to_string(g.kh) + "x" + std::to_string(g.kw) + " s" +
                                  std::to_string(g.sh) + "," + std::to_string(g.sw) + " p" + std::to_string(g.ph) +
                                  "," + std::to_string(g.pw) + " c" + std::to_string(c);
        ASSERT_EQ(ours.sizes(), aten.sizes()) << where;
        EXPECT_TRUE(torch::allclose(ours, aten, 1e-5, 1e-5)) << where << ": " << (ours - aten).abs().max();
        ++checked;
      }
    }
  }
  EXPECT_EQ(checked, 36);
  // Not its case: more taps than its vector holds, dilation; a gradient the kernel cannot take.
  const auto w25 = torch::randn({4, 1, 5, 5});
  const auto x = channels_last(torch::rand({2, 1, 8, 8})).requires_grad_(true);
  EXPECT_FALSE(own_conv2d_input_gradient(x, w25, {1, 1}, {0, 0}, {1, 1}, 1));
  EXPECT_FALSE(own_conv2d_input_gradient(x, torch::randn({4, 1, 3, 3}), {1, 1}, {0, 0}, {2, 2}, 1));
  EXPECT_THROW((void)single_channel_input_gradient(torch::randn({2, 4, 4, 4}), w25, 8, 8, {1, 1}, {0, 0}),
               c10::Error);
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
