#include "model/max_pool.h"

#include <ATen/Parallel.h>
#include <torch/library.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>


namespace bulwark::model {
namespace {

struct Window {
  int64_t kh, kw, sh, sw, ph, pw;
};

struct Plane {
  int64_t h, w, oh, ow;
};

// One value, or two for (height, width), as ATen reads int[2] arguments; nullopt for other lengths.
std::optional<std::pair<int64_t, int64_t>> pair_of(at::IntArrayRef v, std::optional<std::pair<int64_t, int64_t>> if_empty) {
  if (v.empty()) return if_empty;
  if (v.size() == 1) return std::make_pair(v[0], v[0]);
  if (v.size() == 2) return std::make_pair(v[0], v[1]);
  return std::nullopt;
}

std::optional<Window> own_window(const torch::Tensor& x, at::IntArrayRef kernel_size, at::IntArrayRef stride,
                                 at::IntArrayRef padding, at::IntArrayRef dilation, bool ceil_mode) {
  if (!x.defined() || x.dim() != 4 || !x.device().is_cpu() || x.is_quantized() || x.is_mkldnn() || ceil_mode) {
    return std::nullopt;
  }
  if (x.scalar_type() != torch::kFloat && x.scalar_type() != torch::kBFloat16) return std::nullopt;
  if (!x.is_contiguous() || x.size(0) * x.size(1) == 0) return std::nullopt;
  const auto k = pair_of(kernel_size, std::nullopt);
  if (!k) return std::nullopt;
  const auto s = pair_of(stride, k);
  const auto p = pair_of(padding, std::nullopt);
  const auto d = pair_of(dilation, std::nullopt);
  if (!s || !p || !d || d->first != 1 || d->second != 1) return std::nullopt;
  const Window w{k->first, k->second, s->first, s->second, p->first, p->second};
  // ATen's own limits (padding at most half the kernel, a non-empty output), and ours: the window
  // offset of the maximum fits in one byte.
  if (w.kh < 1 || w.kw < 1 || w.kh * w.kw > 255 || w.sh < 1 || w.sw < 1) return std::nullopt;
  if (w.ph < 0 || w.pw < 0 || w.ph > w.kh / 2 || w.pw > w.kw / 2) return std::nullopt;
  if (x.size(2) + 2 * w.ph < w.kh || x.size(3) + 2 * w.pw < w.kw) return std::nullopt;
  return w;
}

Plane plane_of(const torch::Tensor& x, const Window& w) {
  const int64_t h = x.size(2), wd = x.size(3);
  return {h, wd, (h + 2 * w.ph - w.kh) / w.sh + 1, (wd + 2 * w.pw - w.kw) / w.sw + 1};
}

// Channel planes per task: small planes are not worth a thread each.
int64_t grain(const Plane& p) { return std::max<int64_t>(1, 16384 / std::max<int64_t>(1, p.h * p.w)); }

// The maximum of each window and, when `offset` is given, where it lies in the window (row-major).
// The comparison is ATen's (cpu_max_pool): in the accumulation type, the first maximum wins and a
// NaN wins over everything (the last NaN), so values and the gradient's target are the same.
template <typename T>
void forward_planes(const T* in, T* out, uint8_t* offset, int64_t planes, const Plane& p, const Window& w) {
  at::parallel_for(0, planes, grain(p), [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) {
      const T* src = in + c * p.h * p.w;
      T* dst = out + c * p.oh * p.ow;
      uint8_t* off = offset ? offset + c * p.oh * p.ow : nullptr;
      for (int64_t oh = 0; oh < p.oh; ++oh) {
        const int64_t ih0 = oh * w.sh - w.ph, ih1 = std::min(ih0 + w.kh, p.h), hs = std::max<int64_t>(ih0, 0);
        for (int64_t ow = 0; ow < p.ow; ++ow) {
          const int64_t iw0 = ow * w.sw - w.pw, iw1 = std::min(iw0 + w.kw, p.w), ws = std::max<int64_t>(iw0, 0);
          float best = -std::numeric_limits<float>::infinity();
          int64_t at = (hs - ih0) * w.kw + (ws - iw0);
          for (int64_t ih = hs; ih < ih1; ++ih) {
            for (int64_t iw = ws; iw < iw1; ++iw) {
              const float v = static_cast<float>(src[ih * p.w + iw]);
              if (v > best || std::isnan(v)) {
                best = v;
                at = (ih - ih0) * w.kw + (iw - iw0);
              }
            }
          }
          dst[oh * p.ow + ow] = static_cast<T>(best);
          if (off) off[oh * p.ow + ow] = static_cast<uint8_t>(at);
        }
      }
    }
  });
}

// 2x2 windows, stride 2, no padding (the zoo's and most CNNs' pooling): the same comparisons,
// unrolled.
template <typename T>
void forward_planes_2x2(const T* in, T* out, uint8_t* offset, int64_t planes, const Plane& p) {
  at::parallel_for(0, planes, grain(p), [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) {
      const T* src = in + c * p.h * p.w;
      T* dst = out + c * p.oh * p.ow;
      uint8_t* off = offset ? offset + c * p.oh * p.ow : nullptr;
      for (int64_t oh = 0; oh < p.oh; ++oh) {
        const T* r0 = src + 2 * oh * p.w;
        const T* r1 = r0 + p.w;
        for (int64_t ow = 0; ow < p.ow; ++ow) {
          const float v[4] = {static_cast<float>(r0[2 * ow]), static_cast<float>(r0[2 * ow + 1]),
                              static_cast<float>(r1[2 * ow]), static_cast<float>(r1[2 * ow + 1])};
          // ATen starts from -inf at offset 0: whatever the first element is, it ends up holding both.
          float best = v[0];
          uint8_t at = 0;
          for (uint8_t i = 1; i < 4; ++i) {
            const bool wins = v[i] > best || std::isnan(v[i]);
            best = wins ? v[i] : best;
            at = wins ? i : at;
          }
          dst[oh * p.ow + ow] = static_cast<T>(best);
          if (off) off[oh * p.ow + ow] = at;
        }
      }
    }
  });
}

// Each plane's gradient zero-filled and scattered into while it is in cache, in ATen's order
// (cpu_max_pool_backward: outputs row-major, `+=` in the tensor's type), so overlapping windows
// accumulate to the same bits.
template <typename T>
void backward_planes(const T* grad_out, const uint8_t* offset, T* grad_in, int64_t planes, const Plane& p,
                     const Window& w) {
  at::parallel_for(0, planes, grain(p), [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) {
      T* g = grad_in + c * p.h * p.w;
      std::fill(g, g + p.h * p.w, static_cast<T>(0));
      const T* go = grad_out + c * p.oh * p.ow;
      const uint8_t* off = offset + c * p.oh * p.ow;
      for (int64_t oh = 0; oh < p.oh; ++oh) {
        for (int64_t ow = 0; ow < p.ow; ++ow) {
          const int64_t o = oh * p.ow + ow;
          const int64_t ih = oh * w.sh - w.ph + off[o] / w.kw, iw = ow * w.sw - w.pw + off[o] % w.kw;
          g[ih * p.w + iw] += go[o];
        }
      }
    }
  });
}

torch::Tensor pool(const torch::Tensor& x, const Window& w, torch::Tensor* offsets) {
  const Plane p = plane_of(x, w);
  const int64_t planes = x.size(0) * x.size(1);
  auto out = torch::empty({x.size(0), x.size(1), p.oh, p.ow}, x.options());
  uint8_t* off = nullptr;
  if (offsets) {
    *offsets = torch::empty({x.size(0), x.size(1), p.oh, p.ow}, x.options().dtype(torch::kUInt8));
    off = offsets->data_ptr<uint8_t>();
  }
  const bool two_by_two = w.kh == 2 && w.kw == 2 && w.sh == 2 && w.sw == 2 && w.ph == 0 && w.pw == 0;
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, x.scalar_type(), "bulwark::max_pool2d", [&] {
    if (two_by_two) {
      forward_planes_2x2(x.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), off, planes, p);
    } else {
      forward_planes(x.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), off, planes, p, w);
    }
  });
  return out;
}

class MaxPool2dFunction : public torch::autograd::Function<MaxPool2dFunction> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x, const Window& w) {
    torch::Tensor offsets;
    auto out = pool(x, w, &offsets);
    ctx->save_for_backward({offsets});
    ctx->saved_data["geometry"] = std::vector<int64_t>{x.size(2), x.size(3), w.kh, w.kw, w.sh, w.sw, w.ph, w.pw};
    return out;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto offsets = ctx->get_saved_variables()[0];
    const auto g = ctx->saved_data["geometry"].toIntVector();
    const Window w{g[2], g[3], g[4], g[5], g[6], g[7]};
    const Plane p{g[0], g[1], offsets.size(2), offsets.size(3)};
    const auto grad_out = grads[0].contiguous();
    auto grad_in = torch::empty({offsets.size(0), offsets.size(1), p.h, p.w}, grad_out.options());
    AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, grad_out.scalar_type(), "bulwark::max_pool2d_backward", [&] {
      backward_planes(grad_out.data_ptr<scalar_t>(), offsets.data_ptr<uint8_t>(), grad_in.data_ptr<scalar_t>(),
                      offsets.size(0) * offsets.size(1), p, w);
    });
    return {grad_in, torch::Tensor()};
  }
};

torch::Tensor max_pool2d_op(const torch::Tensor& x, at::IntArrayRef kernel_size, at::IntArrayRef stride,
                            at::IntArrayRef padding, at::IntArrayRef dilation, bool ceil_mode) {
  return fast_max_pool2d(x, kernel_size, stride, padding, dilation, ceil_mode);
}

}  // namespace

bool fast_max_pool2d_covers(const torch::Tensor& x, at::IntArrayRef kernel_size, at::IntArrayRef stride,
                               at::IntArrayRef padding, at::IntArrayRef dilation, bool ceil_mode) {
  return own_window(x, kernel_size, stride, padding, dilation, ceil_mode).has_value();
}

torch::Tensor fast_max_pool2d(const torch::Tensor& x, at::IntArrayRef kernel_size, at::IntArrayRef stride,
                         at::IntArrayRef padding, at::IntArrayRef dilation, bool ceil_mode) {
  const auto w = own_window(x, kernel_size, stride, padding, dilation, ceil_mode);
  if (!w) return torch::max_pool2d(x, kernel_size, stride, padding, dilation, ceil_mode);
  if (torch::GradMode::is_enabled() && x.requires_grad()) return MaxPool2dFunction::apply(x, *w);
  return pool(x, *w, nullptr);
}

c10::Symbol max_pool2d_symbol() { return c10::Symbol::fromQualString("bulwark::max_pool2d"); }

}  // namespace bulwark::model

TORCH_LIBRARY(bulwark, m) {
  m.def(
      "max_pool2d(Tensor self, int[2] kernel_size, int[2] stride=[], int[2] padding=0, int[2] dilation=1, "
      "bool ceil_mode=False) -> Tensor",
      &bulwark::model::max_pool2d_op);
}
