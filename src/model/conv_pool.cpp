#include "model/conv_pool.h"

#include <ATen/Parallel.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>
#include <torch/torch.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <optional>
#include <vector>

#include "model/conv2d.h"
#include "model/int_pair.h"

namespace bulwark::model {
namespace {

constexpr int64_t kLanes = 16;  // output channels per vector in the forward; patch taps in the backward
using Lanes = float __attribute__((vector_size(kLanes * sizeof(float))));

// As in model/max_pool.cpp and model/conv2d.cpp: clones for AVX-512, AVX2 and the baseline, picked
// at load time.
#define BULWARK_VECTOR_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))

struct Geometry {
  int64_t channels, kh, kw, h, w, ph, pw;
  int64_t oh() const { return h + 2 * ph - kh + 1; }  // the convolution's output (stride 1)
  int64_t ow() const { return w + 2 * pw - kw + 1; }
  int64_t pooled_h() const { return oh() / 2; }  // 2x2 windows, stride 2, floor mode
  int64_t pooled_w() const { return ow() / 2; }
  int64_t padded_h() const { return h + 2 * ph; }  // the input with its zero border
  int64_t padded_w() const { return w + 2 * pw; }
  int64_t patch_w() const { return kw + 1; }  // a window's input patch: (kh+1) x (kw+1)
  int64_t vectors() const { return (channels + kLanes - 1) / kLanes; }
};

Geometry geometry_of(const torch::Tensor& input, const torch::Tensor& weight, int64_t ph, int64_t pw) {
  return {weight.size(0), weight.size(2), weight.size(3), input.size(2), input.size(3), ph, pw};
}

// A thread's scratch plane: the padded input in the forward, the padded input gradient in the backward.
std::vector<float> padded_plane(const Geometry& g) {
  return std::vector<float>(static_cast<size_t>(g.padded_h() * g.padded_w()), 0.0f);
}

// One image. x: its padded plane; taps [kh*kw][vectors*16] (the kernel, transposed, zero past C);
// bias [vectors*16]; pooled [PH*PW][C]; positions [PH*PW][C].
BULWARK_VECTOR_CLONES void image_forward(const float* x, const float* taps, const float* bias, float* pooled,
                                         uint8_t* positions, const Geometry& g) {
  const int64_t xw = g.padded_w(), c_n = g.channels, width = g.vectors() * kLanes;
  for (int64_t py = 0; py < g.pooled_h(); ++py) {
    for (int64_t px = 0; px < g.pooled_w(); ++px) {
      const float* patch = x + 2 * py * xw + 2 * px;
      const int64_t at = (py * g.pooled_w() + px) * c_n;
      for (int64_t v = 0; v < g.vectors(); ++v) {
        Lanes b;
        std::memcpy(&b, bias + v * kLanes, sizeof b);
        Lanes a0 = b, a1 = b, a2 = b, a3 = b;
        for (int64_t i = 0; i < g.kh; ++i) {
          const float* r0 = patch + i * xw;
          const float* r1 = r0 + xw;
          for (int64_t j = 0; j < g.kw; ++j) {
            Lanes k;
            std::memcpy(&k, taps + (i * g.kw + j) * width + v * kLanes, sizeof k);
            a0 += r0[j] * k;
            a1 += r0[j + 1] * k;
            a2 += r1[j] * k;
            a3 += r1[j + 1] * k;
          }
        }
        // ATen's comparison, in its window order: greater, or NaN, wins; the first maximum stays.
        // Written per lane as selects, which the compiler vectorizes (on these vector types GCC
        // lowers comparisons into int masks one lane at a time).
        float a[4][kLanes], best[kLanes];
        uint8_t where[kLanes];
        std::memcpy(a[0], &a0, sizeof a[0]);
        std::memcpy(a[1], &a1, sizeof a[1]);
        std::memcpy(a[2], &a2, sizeof a[2]);
        std::memcpy(a[3], &a3, sizeof a[3]);
        for (int64_t l = 0; l < kLanes; ++l) {
          float m = a[0][l];
          uint8_t p = 0;
          for (uint8_t q = 1; q < 4; ++q) {
            const float c = a[q][l];
            const bool wins = (c > m) | (c != c);
            m = wins ? c : m;
            p = wins ? q : p;
          }
          best[l] = m;
          where[l] = p;
        }
        const int64_t n = std::min(kLanes, c_n - v * kLanes);
        std::memcpy(pooled + at + v * kLanes, best, static_cast<size_t>(n) * sizeof(float));
        std::memcpy(positions + at + v * kLanes, where, static_cast<size_t>(n));
      }
    }
  }
}

// One image. grad [PH*PW][C], positions [PH*PW][C]; table [C][4][16]: kernel c placed at window
// position p in the (kh+1) x (kw+1) patch, zero elsewhere; out: the padded plane, zeroed.
BULWARK_VECTOR_CLONES void image_backward(const float* grad, const uint8_t* positions, const float* table, float* out,
                                          const Geometry& g) {
  const int64_t xw = g.padded_w(), patch_w = g.patch_w(), c_n = g.channels;
  for (int64_t py = 0; py < g.pooled_h(); ++py) {
    for (int64_t px = 0; px < g.pooled_w(); ++px) {
      const int64_t at = (py * g.pooled_w() + px) * c_n;
      const float* gr = grad + at;
      const uint8_t* pos = positions + at;
      // Four partial sums: independent chains of multiply-adds.
      Lanes s[4] = {};
      for (int64_t c = 0; c < c_n; ++c) {
        Lanes k;
        std::memcpy(&k, table + (c * 4 + (pos[c] & 3)) * kLanes, sizeof k);  // & 3: in bounds whatever it is given
        s[c & 3] += gr[c] * k;
      }
      const Lanes sum = (s[0] + s[1]) + (s[2] + s[3]);
      float v[kLanes];
      std::memcpy(v, &sum, sizeof v);
      float* dst = out + 2 * py * xw + 2 * px;
      for (int64_t i = 0; i <= g.kh; ++i) {
        for (int64_t j = 0; j < patch_w; ++j) dst[i * xw + j] += v[i * patch_w + j];
      }
    }
  }
}

void check_arguments(const torch::Tensor& input, const torch::Tensor& weight, const torch::Tensor& bias, int64_t ph,
                     int64_t pw) {
  TORCH_CHECK(input.dim() == 4 && input.size(1) == 1 && weight.dim() == 4 && weight.size(1) == 1 &&
                  (weight.size(2) + 1) * (weight.size(3) + 1) <= kLanes && ph >= 0 && pw >= 0,
              "conv_pool: input [N, 1, H, W], weight [C, 1, kh, kw] with (kh+1)*(kw+1) <= 16, padding >= 0");
  TORCH_CHECK(!bias.defined() || bias.numel() == 0 || bias.numel() == weight.size(0),
              "conv_pool: bias [C] or none");
  TORCH_CHECK(input.size(2) + 2 * ph - weight.size(2) + 1 >= 2 && input.size(3) + 2 * pw - weight.size(3) + 1 >= 2,
              "conv_pool: the convolution's output must be at least 2x2");
}

}  // namespace

std::vector<torch::Tensor> conv_pool_forward(const torch::Tensor& input, const torch::Tensor& weight,
                                             const torch::Tensor& bias, int64_t ph, int64_t pw) {
  check_arguments(input, weight, bias, ph, pw);
  torch::NoGradGuard no_grad;
  const Geometry g = geometry_of(input, weight, ph, pw);
  const int64_t n = input.size(0), width = g.vectors() * kLanes;
  const auto x = input.to(torch::kFloat).contiguous();  // one channel: NCHW and channels-last are the same bytes
  auto taps = torch::zeros({g.kh * g.kw, width}, x.options());
  taps.narrow(1, 0, g.channels).copy_(weight.reshape({g.channels, g.kh * g.kw}).t());
  auto b = torch::zeros({width}, x.options());
  if (bias.defined() && bias.numel() > 0) b.narrow(0, 0, g.channels).copy_(bias);
  auto pooled = torch::empty({n, g.channels, g.pooled_h(), g.pooled_w()},
                             x.options().memory_format(at::MemoryFormat::ChannelsLast));
  auto positions = torch::empty({n, g.pooled_h(), g.pooled_w(), g.channels}, x.options().dtype(torch::kByte));
  const float* xp = x.data_ptr<float>();
  const float* tp = taps.data_ptr<float>();
  const float* bp = b.data_ptr<float>();
  float* op = pooled.data_ptr<float>();
  uint8_t* pp = positions.data_ptr<uint8_t>();
  const int64_t in_image = g.h * g.w, out_image = g.pooled_h() * g.pooled_w() * g.channels;
  at::parallel_for(0, n, 1, [&](int64_t begin, int64_t end) {
    auto plane = padded_plane(g);
    for (int64_t i = begin; i < end; ++i) {
      for (int64_t r = 0; r < g.h; ++r) {
        std::memcpy(plane.data() + (r + g.ph) * g.padded_w() + g.pw, xp + i * in_image + r * g.w,
                    static_cast<size_t>(g.w) * sizeof(float));
      }
      image_forward(plane.data(), tp, bp, op + i * out_image, pp + i * out_image, g);
    }
  });
  return {pooled, positions};
}

torch::Tensor conv_pool_input_gradient(const torch::Tensor& grad_pooled, const torch::Tensor& positions,
                                       const torch::Tensor& weight, int64_t height, int64_t width, int64_t ph,
                                       int64_t pw) {
  TORCH_CHECK(weight.dim() == 4 && weight.size(1) == 1 && (weight.size(2) + 1) * (weight.size(3) + 1) <= kLanes &&
                  ph >= 0 && pw >= 0,
              "conv_pool: weight [C, 1, kh, kw] with (kh+1)*(kw+1) <= 16, padding >= 0");
  const Geometry g{weight.size(0), weight.size(2), weight.size(3), height, width, ph, pw};
  const int64_t n = grad_pooled.size(0);
  TORCH_CHECK(grad_pooled.dim() == 4 && grad_pooled.size(1) == g.channels && grad_pooled.size(2) == g.pooled_h() &&
                  grad_pooled.size(3) == g.pooled_w() && positions.scalar_type() == torch::kByte &&
                  positions.sizes() == at::IntArrayRef({n, g.pooled_h(), g.pooled_w(), g.channels}),
              "conv_pool: grad_pooled [N, C, PH, PW] and positions [N, PH, PW, C] of the forward");
  torch::NoGradGuard no_grad;
  const auto grad = grad_pooled.to(torch::kFloat).contiguous(at::MemoryFormat::ChannelsLast);
  const auto pos = positions.contiguous();
  const int64_t pw_n = g.patch_w();
  auto table = torch::zeros({g.channels, 4, kLanes}, grad.options());
  const auto k = weight.to(torch::kFloat).reshape({g.channels, g.kh, g.kw});
  for (int64_t p = 0; p < 4; ++p) {
    const int64_t dy = p / 2, dx = p % 2;
    auto placed = table.select(1, p).narrow(1, 0, (g.kh + 1) * pw_n).view({g.channels, g.kh + 1, pw_n});
    placed.narrow(1, dy, g.kh).narrow(2, dx, g.kw).copy_(k);
  }
  auto out = torch::empty({n, 1, height, width}, grad.options());
  const float* gp = grad.data_ptr<float>();
  const uint8_t* pp = pos.data_ptr<uint8_t>();
  const float* tp = table.data_ptr<float>();
  float* op = out.data_ptr<float>();
  const int64_t in_image = g.pooled_h() * g.pooled_w() * g.channels;
  at::parallel_for(0, n, 1, [&](int64_t begin, int64_t end) {
    auto plane = padded_plane(g);
    for (int64_t i = begin; i < end; ++i) {
      std::fill(plane.begin(), plane.end(), 0.0f);
      image_backward(gp + i * in_image, pp + i * in_image, tp, plane.data(), g);
      for (int64_t r = 0; r < height; ++r) {
        std::memcpy(op + (i * height + r) * width, plane.data() + (r + ph) * g.padded_w() + pw,
                    static_cast<size_t>(width) * sizeof(float));
      }
    }
  });
  return out;
}

torch::Tensor conv_pool_activation_gradient(const torch::Tensor& grad_pooled, const torch::Tensor& positions,
                                            int64_t out_h, int64_t out_w) {
  torch::NoGradGuard no_grad;
  const int64_t n = grad_pooled.size(0), c = grad_pooled.size(1), ph = grad_pooled.size(2), pw = grad_pooled.size(3);
  TORCH_CHECK(ph == out_h / 2 && pw == out_w / 2 && positions.scalar_type() == torch::kByte &&
                  positions.sizes() == at::IntArrayRef({n, ph, pw, c}),
              "conv_pool: grad_pooled [N, C, OH/2, OW/2] and positions [N, PH, PW, C] of the forward");
  const auto grad = grad_pooled.to(torch::kFloat).contiguous(at::MemoryFormat::ChannelsLast);
  const auto pos = positions.contiguous();
  // [N, OH, OW, C] in memory: channels-last (torch::zeros does not take a memory format).
  auto out = torch::zeros({n, out_h, out_w, c}, grad.options()).permute({0, 3, 1, 2});
  const float* gp = grad.data_ptr<float>();
  const uint8_t* pp = pos.data_ptr<uint8_t>();
  float* op = out.data_ptr<float>();
  at::parallel_for(0, n, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      for (int64_t y = 0; y < ph; ++y) {
        for (int64_t x = 0; x < pw; ++x) {
          const int64_t at = ((i * ph + y) * pw + x) * c;
          for (int64_t ch = 0; ch < c; ++ch) {
            const int64_t p = pp[at + ch] & 3;
            op[((i * out_h + 2 * y + p / 2) * out_w + 2 * x + p % 2) * c + ch] = gp[at + ch];
          }
        }
      }
    }
  });
  return out;
}

namespace {

// The fused forward; the input gradient from conv_pool_input_gradient, the weight and bias gradients
// from ATen's convolution_backward on the activation gradient the pool passes back.
struct ConvPool : public torch::autograd::Function<ConvPool> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& input,
                               const torch::Tensor& weight, const torch::Tensor& bias, std::vector<int64_t> padding) {
    auto r = conv_pool_forward(input, weight, bias, padding[0], padding[1]);
    ctx->save_for_backward({input, weight, r[1]});
    ctx->saved_data["padding"] = padding;
    ctx->saved_data["bias"] = bias.numel() > 0;
    return r[0];
  }

  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx,
                                               torch::autograd::tensor_list grads) {
    // Its backward is not itself differentiable: no create_graph through it.
    TORCH_CHECK(!torch::GradMode::is_enabled(), "bulwark::conv2d_max_pool2d: no double backward (create_graph)");
    const auto saved = ctx->get_saved_variables();
    const auto &input = saved[0], &weight = saved[1], &positions = saved[2];
    const auto padding = ctx->saved_data["padding"].toIntVector();
    const bool has_bias = ctx->saved_data["bias"].toBool();
    torch::Tensor gi, gw, gb;
    if (ctx->needs_input_grad(0)) {
      gi = conv_pool_input_gradient(grads[0], positions, weight, input.size(2), input.size(3), padding[0], padding[1]);
    }
    const bool want_w = ctx->needs_input_grad(1), want_b = has_bias && ctx->needs_input_grad(2);
    if (want_w || want_b) {
      const int64_t oh = input.size(2) + 2 * padding[0] - weight.size(2) + 1;
      const int64_t ow = input.size(3) + 2 * padding[1] - weight.size(3) + 1;
      const auto activation = conv_pool_activation_gradient(grads[0], positions, oh, ow);
      const std::vector<int64_t> bias_sizes{weight.size(0)};
      auto r = at::convolution_backward(activation, input, weight,
                                        has_bias ? at::OptionalIntArrayRef(bias_sizes) : c10::nullopt, {1, 1}, padding,
                                        {1, 1}, false, {0, 0}, 1, {false, want_w, want_b});
      gw = std::get<1>(r);
      gb = std::get<2>(r);
    }
    return {gi, gw, gb, torch::Tensor()};
  }
};

bool is_pair(at::IntArrayRef v, std::optional<std::pair<int64_t, int64_t>> if_empty, int64_t a, int64_t b) {
  const auto p = int_pair(v, if_empty);
  return p && p->first == a && p->second == b;
}

// The convolution's padding where the fused operator runs, or nullopt (the conditions in conv_pool.h).
std::optional<std::pair<int64_t, int64_t>> fused_padding(const torch::Tensor& input, const torch::Tensor& weight,
                                                         const c10::optional<torch::Tensor>& bias,
                                                         at::IntArrayRef stride, at::IntArrayRef padding,
                                                         at::IntArrayRef dilation, int64_t groups,
                                                         at::IntArrayRef kernel_size, at::IntArrayRef pool_stride,
                                                         at::IntArrayRef pool_padding, at::IntArrayRef pool_dilation,
                                                         bool ceil_mode) {
  // The convolution's conditions are those of rewrite 3's kernel (a channels-last gradient pass
  // through a one-input-channel fp32 convolution, model/conv2d.h); the fused case narrows them.
  if (!own_conv2d_input_gradient(input, weight, stride, padding, dilation, groups)) return std::nullopt;
  if (ceil_mode || input.numel() == 0 || weight.numel() == 0) return std::nullopt;  // ATen's errors for empty ones
  if (bias && bias->defined() &&
      (bias->dim() != 1 || bias->size(0) != weight.size(0) || bias->scalar_type() != torch::kFloat ||
       !bias->device().is_cpu())) {
    return std::nullopt;
  }
  if ((weight.size(2) + 1) * (weight.size(3) + 1) > kLanes || !is_pair(stride, std::make_pair(1, 1), 1, 1)) {
    return std::nullopt;
  }
  if (!is_pair(kernel_size, std::nullopt, 2, 2) || !is_pair(pool_stride, std::make_pair(2, 2), 2, 2) ||
      !is_pair(pool_padding, std::make_pair(0, 0), 0, 0) || !is_pair(pool_dilation, std::make_pair(1, 1), 1, 1)) {
    return std::nullopt;
  }
  const auto p = int_pair(padding, std::make_pair(0, 0));  // checked by own_conv2d_input_gradient
  // A convolution output smaller than one window: ATen's operators and their errors.
  if (input.size(2) + 2 * p->first - weight.size(2) + 1 < 2 || input.size(3) + 2 * p->second - weight.size(3) + 1 < 2) {
    return std::nullopt;
  }
  return p;
}

}  // namespace

bool fused_conv2d_max_pool2d(const torch::Tensor& input, const torch::Tensor& weight,
                             const c10::optional<torch::Tensor>& bias, at::IntArrayRef stride, at::IntArrayRef padding,
                             at::IntArrayRef dilation, int64_t groups, at::IntArrayRef kernel_size,
                             at::IntArrayRef pool_stride, at::IntArrayRef pool_padding, at::IntArrayRef pool_dilation,
                             bool ceil_mode) {
  return fused_padding(input, weight, bias, stride, padding, dilation, groups, kernel_size, pool_stride,
                       pool_padding, pool_dilation, ceil_mode)
      .has_value();
}

torch::Tensor conv2d_max_pool2d(const torch::Tensor& input, const torch::Tensor& weight,
                                const c10::optional<torch::Tensor>& bias, at::IntArrayRef stride,
                                at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                                at::IntArrayRef kernel_size, at::IntArrayRef pool_stride,
                                at::IntArrayRef pool_padding, at::IntArrayRef pool_dilation, bool ceil_mode) {
  const auto p = fused_padding(input, weight, bias, stride, padding, dilation, groups, kernel_size, pool_stride,
                               pool_padding, pool_dilation, ceil_mode);
  if (!p) {
    // Through the dispatcher, so a profile of the pass shows the two operators as before.
    static const auto conv = c10::Dispatcher::singleton()
                                 .findSchemaOrThrow("bulwark::conv2d", "")
                                 .typed<torch::Tensor(const torch::Tensor&, const torch::Tensor&,
                                                      const c10::optional<torch::Tensor>&, at::IntArrayRef,
                                                      at::IntArrayRef, at::IntArrayRef, int64_t)>();
    static const auto pool =
        c10::Dispatcher::singleton()
            .findSchemaOrThrow("bulwark::max_pool2d", "")
            .typed<torch::Tensor(const torch::Tensor&, at::IntArrayRef, at::IntArrayRef, at::IntArrayRef,
                                 at::IntArrayRef, bool)>();
    return pool.call(conv.call(input, weight, bias, stride, padding, dilation, groups), kernel_size, pool_stride,
                     pool_padding, pool_dilation, ceil_mode);
  }
  return ConvPool::apply(input, weight, bias_or_empty(bias, weight), std::vector<int64_t>{p->first, p->second});
}

c10::Symbol conv2d_max_pool2d_symbol() { return c10::Symbol::fromQualString("bulwark::conv2d_max_pool2d"); }

}  // namespace bulwark::model

TORCH_LIBRARY_FRAGMENT(bulwark, m) {
  m.def(
      "conv2d_max_pool2d(Tensor input, Tensor weight, Tensor? bias, int[2] stride, int[2] padding, int[2] dilation, "
      "int groups, int[2] kernel_size, int[2] pool_stride, int[2] pool_padding, int[2] pool_dilation, "
      "bool ceil_mode) -> Tensor",
      &bulwark::model::conv2d_max_pool2d);
}
