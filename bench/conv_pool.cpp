// bench/conv_pool — the fused first layer of a grayscale CNN (model/conv_pool.h) against the
// operators it replaces, in the channels-last gradient pass of an attack step: the zoo `cnn`'s
// conv1 (1 -> 32 channels, 3x3, padding 1) and 2x2 max-pool, then ReLU, on [256, 1, 28, 28], forward
// plus the input gradient. Three sides, alternated, median milliseconds per pass:
//   aten   torch::conv2d + torch::max_pool2d (oneDNN's backward-data, ATen's pool);
//   before model::conv2d (our input-gradient kernel, model/conv2d.h) + ATen's pool: the graph
//          before rewrite 4;
//   fused  model::conv2d_max_pool2d.
//
// Malloc keeps freed memory for reuse, as in the bulwark CLI (core/system.h).
//
// usage: conv_pool [rounds=21] [batch=256]
#include "model/conv_pool.h"

#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include "core/system.h"
#include "model/conv2d.h"
#include "model/model.h"

namespace {

using Clock = std::chrono::steady_clock;

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

double ms(const std::function<void()>& f) {
  const auto t0 = Clock::now();
  f();
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

}  // namespace

int main(int argc, char** argv) {
  const int rounds = argc > 1 ? std::atoi(argv[1]) : 21;
  const int64_t batch = argc > 2 ? std::atoll(argv[2]) : 256;
  if (rounds < 1 || batch < 1 || batch > 4096) {
    std::fprintf(stderr, "conv_pool: rounds must be >= 1 and batch in 1..4096\n");
    return 2;
  }
  bulwark::keep_freed_memory_for_reuse();  // as the bulwark CLI runs (core/system.h)
  torch::set_num_threads(bulwark::hardware_threads());
  torch::manual_seed(0);
  const auto x = bulwark::model::channels_last(torch::rand({batch, 1, 28, 28}));
  const auto w = torch::randn({32, 1, 3, 3}) * 0.3;
  const auto b = torch::randn({32}) * 0.1;
  const auto g = bulwark::model::channels_last(torch::randn({batch, 32, 14, 14}));
  const std::vector<int64_t> one{1, 1}, two{2, 2}, none{0, 0};
  enum Side { kAten, kBefore, kFused };
  const auto pass = [&](Side side) {
    auto xr = x.detach().requires_grad_(true);
    torch::Tensor y;
    if (side == kFused) {
      y = bulwark::model::conv2d_max_pool2d(xr, w, b, one, one, one, 1, two, two, none, one, false);
    } else {
      const auto c = side == kAten ? torch::conv2d(xr, w, b, one, one) : bulwark::model::conv2d(xr, w, b, one, one, one, 1);
      y = torch::max_pool2d(c, two);
    }
    return torch::autograd::grad({torch::relu(y)}, {xr}, {g})[0];
  };
  // The three give the same gradient to rounding (the fused side's window maxima are the others' to
  // rounding too): checked once, so the timing compares passes that do the same work.
  const auto ref = pass(kAten);
  for (const Side s : {kBefore, kFused}) {
    const double diff = (pass(s) - ref).abs().max().item<double>(), scale = ref.abs().max().item<double>();
    if (diff > 1e-4 * scale) {
      std::fprintf(stderr, "conv_pool: side %d differs from ATen's gradient by %g (scale %g)\n", s, diff, scale);
      return 1;
    }
  }
  std::vector<double> t[3];
  for (int r = 0; r < rounds; ++r) {
    for (int k = 0; k < 3; ++k) {
      const Side s = static_cast<Side>((r + k) % 3);
      t[s].push_back(ms([&] { (void)pass(s); }));
    }
  }
  std::printf("conv_pool: conv 1->32 3x3 pad 1, 2x2 max-pool, relu; [%lld, 1, 28, 28] channels-last, fwd + input "
              "gradient; %d rotated rounds, median ms, %d threads\n",
              static_cast<long long>(batch), rounds, torch::get_num_threads());
  const double before = median(t[kBefore]);
  std::printf("  %-40s %8.2f ms  %6.3f\n", "aten (oneDNN conv, ATen pool)", median(t[kAten]), median(t[kAten]) / before);
  std::printf("  %-40s %8.2f ms  %6.3f\n", "before (model/conv2d.h + ATen pool)", before, 1.0);
  std::printf("  %-40s %8.2f ms  %6.3f\n", "fused (model/conv_pool.h)", median(t[kFused]), median(t[kFused]) / before);
  std::printf("{\"bench\":\"conv_pool\",\"batch\":%lld,\"rounds\":%d,\"aten_ms\":%.3f,\"before_ms\":%.3f,\"fused_ms\":%.3f}\n",
              static_cast<long long>(batch), rounds, median(t[kAten]), before, median(t[kFused]));
  return 0;
}
