// The fused one-input-channel convolution and 2x2 max-pool of channels-last gradient passes
// (model/conv_pool.h) against ATen's conv2d, max_pool2d and their backward passes, to rounding.
// The comparisons do not depend on which of two nearly equal window elements wins: the pooled
// values are checked, and the position each window keeps must hold its maximum; the gradients are
// checked against ATen's backward given those positions.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <limits>
#include <string>
#include <vector>

#include "model/conv_pool.h"
#include "model/model.h"
#include "model/zoo.h"

namespace bulwark::model {
namespace {

struct Geo {
  int64_t kh, kw, ph, pw, h, w;
  std::string name() const {
    return "k" + std::to_string(kh) + "x" + std::to_string(kw) + " p" + std::to_string(ph) + "," +
           std::to_string(pw) + " " + std::to_string(h) + "x" + std::to_string(w);
  }
};

// Kernels up to a 4x4 patch, paddings (asymmetric, as wide as the kernel and wider), odd sizes
// whose last row or column no window reads.
const std::vector<Geo> kGeometries = {Geo{3, 3, 1, 1, 28, 28}, Geo{1, 1, 0, 0, 9, 10}, Geo{2, 3, 0, 1, 11, 9},
                                      Geo{3, 2, 2, 0, 7, 8},   Geo{2, 2, 0, 0, 5, 5},  Geo{3, 3, 0, 0, 4, 4},
                                      Geo{1, 1, 2, 1, 5, 6},   Geo{2, 2, 3, 2, 7, 7}};

// The convolution output at each window's kept position: [N, C, PH, PW].
torch::Tensor at_positions(const torch::Tensor& activation, const torch::Tensor& positions) {
  const auto pos = positions.permute({0, 3, 1, 2}).to(torch::kLong);  // [N, C, PH, PW]
  const int64_t ph = pos.size(2), pw = pos.size(3);
  const auto windows = activation.narrow(2, 0, 2 * ph).narrow(3, 0, 2 * pw).unfold(2, 2, 2).unfold(3, 2, 2);
  return windows.reshape({pos.size(0), pos.size(1), ph, pw, 4}).gather(4, pos.unsqueeze(4)).squeeze(4);
}

TEST(ConvPool, ForwardEqualsAtensToRoundingAndKeepsEachWindowsMaximum) {
  torch::manual_seed(21);
  int checked = 0;
  for (const Geo& g : kGeometries) {
    for (const int64_t c : {1, 7, 17, 32}) {
      const auto x = torch::rand({3, 1, g.h, g.w});
      const auto weight = torch::randn({c, 1, g.kh, g.kw});
      const auto bias = torch::randn({c});
      for (const bool with_bias : {true, false}) {
        const auto b = with_bias ? bias : torch::Tensor();
        const auto activation = torch::conv2d(x, weight, b, {1, 1}, {g.ph, g.pw});
        const auto aten = torch::max_pool2d(activation, {2, 2});
        const auto ours = conv_pool_forward(x, weight, b, g.ph, g.pw);
        const std::string where = g.name() + " c" + std::to_string(c) + (with_bias ? " bias" : "");
        ASSERT_EQ(ours[0].sizes(), aten.sizes()) << where;
        EXPECT_TRUE(ours[0].is_contiguous(at::MemoryFormat::ChannelsLast)) << where;
        EXPECT_TRUE(torch::allclose(ours[0], aten, 1e-5, 1e-5)) << where << ": " << (ours[0] - aten).abs().max();
        EXPECT_LE(ours[1].max().item<int>(), 3) << where;
        EXPECT_TRUE(torch::allclose(at_positions(activation, ours[1]), aten, 1e-5, 1e-5)) << where;
        ++checked;
      }
    }
  }
  EXPECT_EQ(checked, 64);
}

// Ties and NaN follow ATen's rule: the first maximum of a window wins, and NaN wins over numbers.
TEST(ConvPool, TiesKeepTheFirstPositionAndNanWins) {
  const auto weight = torch::randn({5, 1, 3, 3});
  const auto bias = torch::randn({5});
  // A blank image: every output is the bias, every window ties.
  const auto blank = conv_pool_forward(torch::zeros({2, 1, 8, 8}), weight, bias, 1, 1);
  EXPECT_TRUE(torch::equal(blank[0], bias.view({1, 5, 1, 1}).expand({2, 5, 4, 4})));
  EXPECT_EQ(blank[1].max().item<int>(), 0);
  // One NaN pixel poisons the windows whose convolution reads it; ATen's pool gives NaN there too.
  auto x = torch::rand({1, 1, 8, 8});
  x[0][0][5][2] = std::numeric_limits<float>::quiet_NaN();
  const auto ours = conv_pool_forward(x, weight, bias, 1, 1);
  const auto aten = torch::max_pool2d(torch::conv2d(x, weight, bias, {1, 1}, {1, 1}), {2, 2});
  EXPECT_TRUE(torch::equal(torch::isnan(ours[0]), torch::isnan(aten)));
  EXPECT_GT(torch::isnan(aten).sum().item<int64_t>(), 0);
  EXPECT_TRUE(torch::allclose(ours[0].nan_to_num(0), aten.nan_to_num(0), 1e-5, 1e-5));
  // Window (2, 1) reads convolution outputs (4..5, 2..3), all NaN: the last NaN wins (position 3),
  // where ATen's backward sends the gradient; window (2, 0) has NaN at positions 1 and 3.
  EXPECT_TRUE(torch::equal(ours[1][0][2][1], torch::full({5}, 3, torch::kByte)));
  EXPECT_TRUE(torch::equal(ours[1][0][2][0], torch::full({5}, 3, torch::kByte)));
  const auto aten_idx = std::get<1>(torch::max_pool2d_with_indices(torch::conv2d(x, weight, bias, {1, 1}, {1, 1}), {2, 2}));
  EXPECT_TRUE(torch::equal(aten_idx[0].select(1, 2).select(1, 1), torch::full({5}, 5 * 8 + 3, torch::kLong)));
}

// The backward against ATen's: the activation gradient is the pooled gradient at each kept position
// (ATen's max_pool2d backward given the same positions as indices), and the input gradient is
// ATen's convolution backward of it.
TEST(ConvPool, GradientsEqualAtensBackwardThroughTheKeptPositions) {
  torch::manual_seed(22);
  int checked = 0;
  for (const Geo& g : kGeometries) {
    for (const int64_t c : {1, 7, 17, 32}) {
      const auto x = torch::rand({3, 1, g.h, g.w});
      const auto weight = torch::randn({c, 1, g.kh, g.kw});
      const auto fwd = conv_pool_forward(x, weight, torch::Tensor(), g.ph, g.pw);
      const int64_t oh = g.h + 2 * g.ph - g.kh + 1, ow = g.w + 2 * g.pw - g.kw + 1;
      const auto grad = torch::randn(fwd[0].sizes());
      // ATen's indices are flat offsets into each [OH, OW] plane.
      const auto pos = fwd[1].permute({0, 3, 1, 2}).to(torch::kLong);
      const auto rows = torch::arange(fwd[0].size(2), torch::kLong).view({1, 1, -1, 1}) * 2 + pos.floor_divide(2);
      const auto cols = torch::arange(fwd[0].size(3), torch::kLong).view({1, 1, 1, -1}) * 2 + pos.remainder(2);
      const auto activation = torch::conv2d(x, weight, {}, {1, 1}, {g.ph, g.pw});
      const auto aten_activation = at::max_pool2d_with_indices_backward(grad, activation, {2, 2}, {2, 2}, {0, 0},
                                                                        {1, 1}, false, rows * ow + cols);
      const auto ours_activation = conv_pool_activation_gradient(grad, fwd[1], oh, ow);
      const std::string where = g.name() + " c" + std::to_string(c);
      EXPECT_TRUE(torch::equal(ours_activation, aten_activation)) << where;
      const auto aten = std::get<0>(at::convolution_backward(aten_activation, x, weight, c10::nullopt, {1, 1},
                                                             {g.ph, g.pw}, {1, 1}, false, {0, 0}, 1,
                                                             {true, false, false}));
      for (const bool channels_last_grad : {true, false}) {
        const auto in = channels_last_grad ? grad.contiguous(at::MemoryFormat::ChannelsLast) : grad.contiguous();
        const auto ours = conv_pool_input_gradient(in, fwd[1], weight, g.h, g.w, g.ph, g.pw);
        ASSERT_EQ(ours.sizes(), aten.sizes()) << where;
        EXPECT_TRUE(torch::allclose(ours, aten, 1e-5, 1e-5)) << where << ": " << (ours - aten).abs().max();
        ++checked;
      }
    }
  }
  EXPECT_EQ(checked, 64);
}

// Through autograd, as the operator runs in the graph: input, weight and bias gradients; and the
// input gradient alone with frozen weights, as attacks run.
TEST(ConvPool, OperatorUnderAutogradGivesAtensGradientsToRounding) {
  torch::manual_seed(23);
  const auto weight = torch::randn({32, 1, 3, 3}).requires_grad_(true);
  const auto bias = torch::randn({32}).requires_grad_(true);
  const auto x = channels_last(torch::rand({4, 1, 28, 28})).requires_grad_(true);
  ASSERT_TRUE(
      fused_conv2d_max_pool2d(x, weight, bias, {1, 1}, {1, 1}, {1, 1}, 1, {2, 2}, {2, 2}, {0, 0}, {1, 1}, false));
  const auto ours = conv2d_max_pool2d(x, weight, bias, {1, 1}, {1, 1}, {1, 1}, 1, {2, 2}, {}, {0, 0}, {1, 1}, false);
  ASSERT_TRUE(ours.grad_fn());
  EXPECT_NE(ours.grad_fn()->name().find("ConvPool"), std::string::npos) << ours.grad_fn()->name();
  const auto upstream = torch::randn(ours.sizes());
  const auto g_ours = torch::autograd::grad({(ours * upstream).sum()}, {x, weight, bias});
  // The reference: ATen's operators, their gradients flowing through the positions the fused pass kept.
  const auto fwd = conv_pool_forward(x.detach(), weight.detach(), bias.detach(), 1, 1);
  const auto activation = torch::conv2d(x, weight, bias, {1, 1}, {1, 1});
  const auto kept = at_positions(activation, fwd[1]);
  EXPECT_TRUE(torch::allclose(ours, kept, 1e-5, 1e-5));
  const auto g_aten = torch::autograd::grad({(kept * upstream).sum()}, {x, weight, bias});
  for (size_t i = 0; i < 3; ++i) {
    const double scale = g_aten[i].abs().max().item<double>();
    EXPECT_LE((g_ours[i] - g_aten[i]).abs().max().item<double>(), 1e-5 * scale) << "gradient " << i;
  }
  const auto frozen_w = weight.detach(), frozen_b = bias.detach();
  const auto frozen =
      conv2d_max_pool2d(x, frozen_w, frozen_b, {1, 1}, {1, 1}, {1, 1}, 1, {2, 2}, {}, {0, 0}, {1, 1}, false);
  const auto gx = torch::autograd::grad({(frozen * upstream).sum()}, {x})[0];
  EXPECT_LE((gx - g_aten[0]).abs().max().item<double>(), 1e-5 * g_aten[0].abs().max().item<double>());
  // No double backward through it: an error, not a silently detached gradient.
  const auto again = conv2d_max_pool2d(x, weight, bias, {1, 1}, {1, 1}, {1, 1}, 1, {2, 2}, {}, {0, 0}, {1, 1}, false);
  EXPECT_THROW((void)torch::autograd::grad({again.sum()}, {x}, {}, /*retain_graph=*/true, /*create_graph=*/true),
               c10::Error);
}

// Outside its case the operator is exactly the two operators it replaced.
TEST(ConvPool, DeclinesWhatItDoesNotCoverAndThenRunsConvThenPool) {
  const auto w = torch::randn({4, 1, 3, 3});
  const auto cl = channels_last(torch::rand({2, 1, 12, 12})).requires_grad_(true);
  const auto nchw = torch::rand({2, 1, 12, 12}).requires_grad_(true);
  const auto fused = [&](const torch::Tensor& x, const torch::Tensor& weight, std::vector<int64_t> stride,
                         std::vector<int64_t> kernel, std::vector<int64_t> pool_stride, bool ceil) {
    return fused_conv2d_max_pool2d(x, weight, {}, stride, {1, 1}, {1, 1}, 1, kernel, pool_stride, {0, 0}, {1, 1},
                                   ceil);
  };
  EXPECT_TRUE(fused(cl, w, {1, 1}, {2, 2}, {}, false));
  EXPECT_FALSE(fused(nchw, w, {1, 1}, {2, 2}, {}, false));                    // NCHW: exact passes
  EXPECT_FALSE(fused(cl, w, {2, 2}, {2, 2}, {}, false));                      // strided convolution
  EXPECT_FALSE(fused(cl, w, {1, 1}, {3, 3}, {}, false));                      // 3x3 pool
  EXPECT_FALSE(fused(cl, w, {1, 1}, {2, 2}, {1, 1}, false));                  // overlapping windows
  EXPECT_FALSE(fused(cl, w, {1, 1}, {2, 2}, {}, true));                       // ceil mode
  EXPECT_FALSE(fused(cl, torch::randn({4, 1, 4, 4}), {1, 1}, {2, 2}, {}, false));  // a 5x5 patch
  EXPECT_FALSE(fused(channels_last(torch::rand({2, 3, 12, 12})).requires_grad_(true), torch::randn({4, 3, 3, 3}),
                     {1, 1}, {2, 2}, {}, false));  // three input channels
  EXPECT_FALSE(fused(channels_last(torch::rand({2, 1, 0, 12})).requires_grad_(true), w, {1, 1}, {2, 2}, {},
                     false));  // an empty plane: ATen's error
  EXPECT_FALSE(fused_conv2d_max_pool2d(cl, w, torch::randn({3}), {1, 1}, {1, 1}, {1, 1}, 1, {2, 2}, {}, {0, 0}, {1, 1},
                                       false));  // a bias of the wrong size: ATen's error
  {
    torch::NoGradGuard no_grad;
    EXPECT_FALSE(fused(cl, w, {1, 1}, {2, 2}, {}, false));
  }
  const auto ours = conv2d_max_pool2d(nchw, w, {}, {1, 1}, {1, 1}, {1, 1}, 1, {2, 2}, {}, {0, 0}, {1, 1}, false);
  const auto aten = torch::max_pool2d(torch::conv2d(nchw, w, {}, {1, 1}, {1, 1}), {2, 2});
  EXPECT_TRUE(torch::equal(ours, aten));
  EXPECT_TRUE(torch::equal(torch::autograd::grad({ours.sum()}, {nchw})[0],
                           torch::autograd::grad({aten.sum()}, {nchw})[0]));
  // ATen's errors for arguments it rejects.
  EXPECT_THROW((void)conv2d_max_pool2d(cl, w, {}, {1, 1}, {1, 1}, {1, 1}, 1, {2, 2}, {}, {2, 2}, {1, 1}, false),
               c10::Error);
  // The kernels' own checks.
  EXPECT_THROW((void)conv_pool_forward(torch::rand({2, 3, 8, 8}), w, {}, 1, 1), c10::Error);
  EXPECT_THROW((void)conv_pool_forward(torch::rand({2, 1, 2, 2}), w, {}, 0, 0), c10::Error);
  EXPECT_THROW((void)conv_pool_forward(torch::rand({2, 1, 8, 8}), w, torch::randn({3}), 1, 1), c10::Error);
  EXPECT_THROW((void)conv_pool_input_gradient(torch::rand({2, 4, 6, 6}), torch::zeros({2, 6, 6, 4}, torch::kByte), w,
                                              12, 12, -1, -1),
               c10::Error);
  EXPECT_THROW((void)conv_pool_input_gradient(torch::rand({2, 4, 5, 5}), torch::zeros({2, 6, 6, 4}, torch::kByte), w,
                                              12, 12, 1, 1),
               c10::Error);
}

}  // namespace
}  // namespace bulwark::model
