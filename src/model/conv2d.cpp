#include "model/conv2d.h"

#include <ATen/Parallel.h>
#include <ATen/autocast_mode.h>
#include <torch/library.h>
#include <torch/torch.h>

#include <cstdint>
#include <optional>
#include <vector>

#include "model/int_pair.h"

namespace bulwark::model {

torch::Tensor bias_or_empty(const c10::optional<torch::Tensor>& bias, const torch::Tensor& weight) {
  return bias && bias->defined() ? *bias : torch::empty({0}, weight.options().requires_grad(false));
}

namespace {

constexpr int64_t kLanes = 16;  // kh*kw of the kernels this file covers, padded: one vector per pixel
using Lanes = float __attribute__((vector_size(kLanes * sizeof(float))));

struct Geometry {
  int64_t channels, kh, kw, oh, ow, h, w, sh, sw, ph, pw;
};

// The vector clones are compiled for AVX-512, AVX2 and the baseline, and picked at load time
// (GCC's target_clones, as in model/max_pool.cpp). GCC's vector extension keeps one Lanes value
// in registers at every optimization level; four pixels at a time keep four independent chains of
// multiply-adds in flight.
#define BULWARK_VECTOR_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))

// Adds one output pixel's row of kh*kw products into the input pixels it was computed from.
inline void scatter(const Lanes& products, int64_t pixel, const Geometry& g, float* out) {
  float v[kLanes];
  __builtin_memcpy(v, &products, sizeof v);
  const int64_t oy = pixel / g.ow, ox = pixel % g.ow;
  for (int64_t a = 0; a < g.kh; ++a) {
    const int64_t iy = oy * g.sh - g.ph + a;
    if (iy < 0 || iy >= g.h) continue;
    for (int64_t b = 0; b < g.kw; ++b) {
      const int64_t ix = ox * g.sw - g.pw + b;
      if (ix < 0 || ix >= g.w) continue;
      out[iy * g.w + ix] += v[a * g.kw + b];
    }
  }
}

// One image: grad [OH*OW, C] (channels-last), kernel [C, kLanes] (kh*kw used, the rest zero),
// out [H*W], zeroed.
BULWARK_VECTOR_CLONES void image_input_gradient(const float* grad, const float* kernel, float* out,
                                                const Geometry& g) {
  const int64_t pixels = g.oh * g.ow, c_n = g.channels;
  int64_t p = 0;
  for (; p + 4 <= pixels; p += 4) {
    const float* row = grad + p * c_n;
    Lanes a0 = {}, a1 = {}, a2 = {}, a3 = {};
    for (int64_t c = 0; c < c_n; ++c) {
      Lanes k;
      __builtin_memcpy(&k, kernel + c * kLanes, sizeof k);
      a0 += row[c] * k;
      a1 += row[c_n + c] * k;
      a2 += row[2 * c_n + c] * k;
      a3 += row[3 * c_n + c] * k;
    }
    scatter(a0, p, g, out);
    scatter(a1, p + 1, g, out);
    scatter(a2, p + 2, g, out);
    scatter(a3, p + 3, g, out);
  }
  for (; p < pixels; ++p) {
    Lanes a0 = {};
    for (int64_t c = 0; c < c_n; ++c) {
      Lanes k;
      __builtin_memcpy(&k, kernel + c * kLanes, sizeof k);
      a0 += grad[p * c_n + c] * k;
    }
    scatter(a0, p, g, out);
  }
}

// autograd::Function takes no undefined tensor among its inputs: an absent bias goes in as an empty one.
c10::optional<torch::Tensor> optional_of(const torch::Tensor& t) {
  return t.numel() > 0 ? c10::optional<torch::Tensor>(t) : c10::nullopt;
}

// ATen's forward; the input gradient from single_channel_input_gradient, the weight and bias
// gradients from ATen's convolution_backward.
struct SingleChannelConv : public torch::autograd::Function<SingleChannelConv> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& input,
                               const torch::Tensor& weight, const torch::Tensor& bias, std::vector<int64_t> stride,
                               std::vector<int64_t> padding) {
    ctx->save_for_backward({input, weight});
    ctx->saved_data["stride"] = stride;
    ctx->saved_data["padding"] = padding;
    ctx->saved_data["bias"] = bias.numel() > 0;
    return at::conv2d(input, weight, optional_of(bias), stride, padding);
  }

  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx,
                                               torch::autograd::tensor_list grads) {
    // Its backward is not itself differentiable: no create_graph through it.
    TORCH_CHECK(!torch::GradMode::is_enabled(), "bulwark::conv2d: no double backward (create_graph)");
    const auto saved = ctx->get_saved_variables();
    const auto &input = saved[0], &weight = saved[1];
    const auto stride = ctx->saved_data["stride"].toIntVector();
    const auto padding = ctx->saved_data["padding"].toIntVector();
    const bool has_bias = ctx->saved_data["bias"].toBool();
    const auto& g = grads[0];
    torch::Tensor gi, gw, gb;
    if (ctx->needs_input_grad(0)) {
      gi = single_channel_input_gradient(g, weight, input.size(2), input.size(3), stride, padding);
    }
    const bool want_w = ctx->needs_input_grad(1), want_b = has_bias && ctx->needs_input_grad(2);
    if (want_w || want_b) {
      const std::vector<int64_t> bias_sizes{weight.size(0)};
      auto r = at::convolution_backward(g, input, weight, has_bias ? at::OptionalIntArrayRef(bias_sizes) : c10::nullopt,
                                        stride, padding, {1, 1}, false, {0, 0}, 1, {false, want_w, want_b});
      gw = std::get<1>(r);
      gb = std::get<2>(r);
    }
    return {gi, gw, gb, torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

namespace {

// The stride and padding the kernel runs with, or nullopt where ATen's convolution runs (the
// conditions in model/conv2d.h).
struct Plan {
  std::pair<int64_t, int64_t> stride, padding;
};

std::optional<Plan> own_plan(const torch::Tensor& input, const torch::Tensor& weight, at::IntArrayRef stride,
                             at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  if (!torch::GradMode::is_enabled() || !input.defined() || !input.requires_grad()) return std::nullopt;
  if (at::autocast::is_cpu_enabled()) return std::nullopt;
  if (input.dim() != 4 || weight.dim() != 4 || input.size(1) != 1 || weight.size(1) != 1 || groups != 1) {
    return std::nullopt;
  }
  if (input.scalar_type() != torch::kFloat || weight.scalar_type() != torch::kFloat) return std::nullopt;
  if (!input.device().is_cpu() || !weight.device().is_cpu() || input.is_mkldnn() || weight.is_mkldnn()) {
    return std::nullopt;
  }
  if (input.is_quantized() || weight.size(2) * weight.size(3) > kLanes) return std::nullopt;
  // Only channels-last passes: NCHW ones stay bit for bit the module's (model/forward_graph.h).
  if (input.suggest_memory_format() != at::MemoryFormat::ChannelsLast) return std::nullopt;
  const auto s = int_pair(stride, std::make_pair(1, 1)), p = int_pair(padding, std::make_pair(0, 0));
  const auto d = int_pair(dilation, std::make_pair(1, 1));
  if (!s || !p || !d || d->first != 1 || d->second != 1) return std::nullopt;
  if (s->first < 1 || s->second < 1 || p->first < 0 || p->second < 0) return std::nullopt;  // ATen's errors
  return Plan{*s, *p};
}

}  // namespace

bool own_conv2d_input_gradient(const torch::Tensor& input, const torch::Tensor& weight, at::IntArrayRef stride,
                               at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  return own_plan(input, weight, stride, padding, dilation, groups).has_value();
}

torch::Tensor conv2d(const torch::Tensor& input, const torch::Tensor& weight, const c10::optional<torch::Tensor>& bias,
                     at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  const auto plan = own_plan(input, weight, stride, padding, dilation, groups);
  if (!plan) return at::conv2d(input, weight, bias, stride, padding, dilation, groups);
  return SingleChannelConv::apply(input, weight, bias_or_empty(bias, weight),
                                  std::vector<int64_t>{plan->stride.first, plan->stride.second},
                                  std::vector<int64_t>{plan->padding.first, plan->padding.second});
}

torch::Tensor single_channel_input_gradient(const torch::Tensor& grad_output, const torch::Tensor& weight,
                                            int64_t height, int64_t width, at::IntArrayRef stride,
                                            at::IntArrayRef padding) {
  TORCH_CHECK(grad_output.dim() == 4 && weight.dim() == 4 && weight.size(1) == 1 &&
                  grad_output.size(1) == weight.size(0) && weight.size(2) * weight.size(3) <= kLanes,
              "single_channel_input_gradient: grad [N, C, OH, OW] and weight [C, 1, kh, kw] with kh*kw <= 16");
  const auto s = int_pair(stride, std::make_pair(1, 1)), p = int_pair(padding, std::make_pair(0, 0));
  TORCH_CHECK(s && p, "single_channel_input_gradient: stride and padding take one or two values");
  torch::NoGradGuard no_grad;
  const auto grad = grad_output.to(torch::kFloat).contiguous(at::MemoryFormat::ChannelsLast);
  const Geometry geo{grad.size(1), weight.size(2), weight.size(3), grad.size(2), grad.size(3), height,
                     width,        s->first,       s->second,      p->first,     p->second};
  auto kernel = torch::zeros({geo.channels, kLanes}, grad.options());
  kernel.narrow(1, 0, geo.kh * geo.kw).copy_(weight.reshape({geo.channels, geo.kh * geo.kw}));
  auto out = torch::zeros({grad.size(0), 1, height, width}, grad.options().memory_format(at::MemoryFormat::Contiguous));
  const float* gp = grad.data_ptr<float>();
  const float* kp = kernel.data_ptr<float>();
  float* op = out.data_ptr<float>();
  const int64_t in_image = geo.oh * geo.ow * geo.channels, out_image = height * width;
  at::parallel_for(0, grad.size(0), 1, [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n) image_input_gradient(gp + n * in_image, kp, op + n * out_image, geo);
  });
  return out;
}

c10::Symbol conv2d_symbol() { return c10::Symbol::fromQualString("bulwark::conv2d"); }

}  // namespace bulwark::model

TORCH_LIBRARY_FRAGMENT(bulwark, m) {
  m.def(
      "conv2d(Tensor input, Tensor weight, Tensor? bias=None, int[2] stride=1, int[2] padding=0, int[2] dilation=1, "
      "int groups=1) -> Tensor",
      &bulwark::model::conv2d);
}
