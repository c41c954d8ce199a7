#include "model/max_pool.h"

#include <ATen/Parallel.h>
#include <torch/library.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>

#include "model/int_pair.h"

namespace bulwark::model {
namespace {

struct Window {
  int64_t kh, kw, sh, sw, ph, pw;
};

struct Plane {
  int64_t h, w, oh, ow;
};

std::optional<Window> own_window(const torch::Tensor& x, at::IntArrayRef kernel_size, at::IntArrayRef stride,
                                 at::IntArrayRef padding, at::IntArrayRef dilation, bool ceil_mode) {
  if (!x.defined() || x.dim() != 4 || !x.device().is_cpu() || x.is_quantized() || x.is_mkldnn() || ceil_mode) {
    return std::nullopt;
  }
  // Under autograd ATen's operator: its indices make its backward cheap (model/max_pool.h).
  if (torch::GradMode::is_enabled() && x.requires_grad()) return std::nullopt;
  // bfloat16 too measured slower than ATen on 14x14 planes (bench/max_pool); fp32 only.
  if (x.scalar_type() != torch::kFloat) return std::nullopt;
  if (!x.is_contiguous() || x.size(0) * x.size(1) == 0) return std::nullopt;
  const auto k = int_pair(kernel_size, std::nullopt);
  if (!k) return std::nullopt;
  const auto s = int_pair(stride, k);
  const auto p = int_pair(padding, std::nullopt);
  const auto d = int_pair(dilation, std::nullopt);
  if (!s || !p || !d || d->first != 1 || d->second != 1) return std::nullopt;
  const Window w{k->first, k->second, s->first, s->second, p->first, p->second};
  // ATen's own limits (padding at most half the kernel, a non-empty output): outside them its errors.
  if (w.kh < 1 || w.kw < 1 || w.sh < 1 || w.sw < 1) return std::nullopt;
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

// The maximum of each window. The comparison is ATen's (cpu_max_pool): the first maximum wins (so of +0 and -0 the
// first one) and a NaN wins over everything (the last NaN), so the values are ATen's to the bit.
void forward_planes(const float* in, float* out, int64_t planes, const Plane& p, const Window& w) {
  at::parallel_for(0, planes, grain(p), [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) {
      const float* src = in + c * p.h * p.w;
      float* dst = out + c * p.oh * p.ow;
      for (int64_t oh = 0; oh < p.oh; ++oh) {
        const int64_t ih0 = oh * w.sh - w.ph, ih1 = std::min(ih0 + w.kh, p.h), hs = std::max<int64_t>(ih0, 0);
        for (int64_t ow = 0; ow < p.ow; ++ow) {
          const int64_t iw0 = ow * w.sw - w.pw, iw1 = std::min(iw0 + w.kw, p.w), ws = std::max<int64_t>(iw0, 0);
          float best = -std::numeric_limits<float>::infinity();
          for (int64_t ih = hs; ih < ih1; ++ih) {
            for (int64_t iw = ws; iw < iw1; ++iw) {
              const float v = src[ih * p.w + iw];
              if (v > best || std::isnan(v)) best = v;
            }
          }
          dst[oh * p.ow + ow] = best;
        }
      }
    }
  });
}

// 2x2 windows, stride 2, no padding (the zoo's and most CNNs' pooling): the same comparisons,
// written as selects so the compiler vectorizes them, built for AVX-512, AVX2 and baseline x86-64
// and picked at load time (GCC's target_clones).
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define BULWARK_VECTOR_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define BULWARK_VECTOR_CLONES
#endif

// ATen's rule for one more element of the window: it wins if greater, or NaN. ATen starts from
// -inf, so the first element always wins its comparison: starting from it is the same.
#define BULWARK_WINS(v, best) (((v) > (best)) | ((v) != (v)))

BULWARK_VECTOR_CLONES void row_2x2_f32(const float* r0, const float* r1, float* dst, int64_t n) {
  for (int64_t j = 0; j < n; ++j) {
    const float b = r0[2 * j + 1], c = r1[2 * j], d = r1[2 * j + 1];
    float m = r0[2 * j];
    m = BULWARK_WINS(b, m) ? b : m;
    m = BULWARK_WINS(c, m) ? c : m;
    m = BULWARK_WINS(d, m) ? d : m;
    dst[j] = m;
  }
}

#undef BULWARK_WINS

void forward_planes_2x2(const float* in, float* out, int64_t planes, const Plane& p) {
  at::parallel_for(0, planes, grain(p), [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) {
      for (int64_t oh = 0; oh < p.oh; ++oh) {
        const float* r0 = in + c * p.h * p.w + 2 * oh * p.w;
        float* dst = out + (c * p.oh + oh) * p.ow;
        row_2x2_f32(r0, r0 + p.w, dst, p.ow);
      }
    }
  });
}

torch::Tensor pool(const torch::Tensor& x, const Window& w) {
  const Plane p = plane_of(x, w);
  const int64_t planes = x.size(0) * x.size(1);
  auto out = torch::empty({x.size(0), x.size(1), p.oh, p.ow}, x.options());
  const bool two_by_two = w.kh == 2 && w.kw == 2 && w.sh == 2 && w.sw == 2 && w.ph == 0 && w.pw == 0;
  two_by_two ? forward_planes_2x2(x.data_ptr<float>(), out.data_ptr<float>(), planes, p)
             : forward_planes(x.data_ptr<float>(), out.data_ptr<float>(), planes, p, w);
  return out;
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
  return pool(x, *w);
}

c10::Symbol max_pool2d_symbol() { return c10::Symbol::fromQualString("bulwark::max_pool2d"); }

}  // namespace bulwark::model

TORCH_LIBRARY(bulwark, m) {
  m.def(
      "max_pool2d(Tensor self, int[2] kernel_size, int[2] stride=[], int[2] padding=0, int[2] dilation=1, "
      "bool ceil_mode=False) -> Tensor",
      &bulwark::model::fast_max_pool2d);
}
