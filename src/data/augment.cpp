#include "data/augment.h"

#include <torch/torch.h>

#include <random>

#include "core/error.h"

namespace bulwark::data {

torch::Tensor crop_flip(const torch::Tensor& x, uint64_t seed, int64_t pad) {
  if (x.dim() != 4) throw invalid_argument("crop_flip: a batch [N, C, H, W] is needed");
  if (pad < 0) throw invalid_argument("crop_flip: padding must be >= 0");
  const int64_t n = x.size(0), h = x.size(2), w = x.size(3);
  const auto padded = torch::constant_pad_nd(x, {pad, pad, pad, pad}, 0.0);
  auto out = torch::empty_like(x, x.options().memory_format(at::MemoryFormat::Contiguous));
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int64_t> offset(0, 2 * pad);
  std::bernoulli_distribution flip(0.5);
  torch::NoGradGuard no_grad;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t top = offset(rng), left = offset(rng);
    auto crop = padded[i].narrow(1, top, h).narrow(2, left, w);
    out[i].copy_(flip(rng) ? crop.flip({2}) : crop);
  }
  return out;
}

}  // namespace bulwark::data
