// bench/max_pool — bulwark::max_pool2d (model/max_pool.h) against ATen's max_pool2d on the zoo
// `cnn`'s two pooling shapes at batch 256, fp32 and bf16, forward without autograd (verdicts,
// Square's queries, serving); and, as a check that the operator hands them to ATen, forward +
// backward and the recorded forward. Alternated pairs, median milliseconds and ratio.
//
// usage: max_pool [pairs=15]
#include "model/max_pool.h"

#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include "core/system.h"

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
  const int pairs = argc > 1 ? std::atoi(argv[1]) : 15;
  if (pairs < 1) {
    std::fprintf(stderr, "max_pool: pairs must be >= 1\n");
    return 2;
  }
  torch::set_num_threads(bulwark::hardware_threads());
  std::printf("max_pool: 2x2 stride 2, %d alternated pairs, median ms, %d threads\n", pairs, torch::get_num_threads());
  std::printf("  %-22s %-5s %-9s %9s %9s %7s\n", "input", "dtype", "pass", "aten ms", "ours ms", "ratio");
  for (const auto& shape : std::vector<std::vector<int64_t>>{{256, 32, 28, 28}, {256, 64, 14, 14}}) {
    for (const auto dtype : {torch::kFloat, torch::kBFloat16}) {
      const auto x = torch::randn(shape).to(dtype);
      const auto g = torch::randn({shape[0], shape[1], shape[2] / 2, shape[3] / 2}).to(dtype);
      const std::vector<int64_t> k{2, 2};
      auto step = [&](bool ours) {
        auto xr = x.detach().requires_grad_(true);
        auto y = ours ? bulwark::model::fast_max_pool2d(xr, k) : torch::max_pool2d(xr, k);
        (void)torch::autograd::grad({y}, {xr}, {g});
      };
      auto forward = [&](bool ours) {
        torch::NoGradGuard no_grad;
        (void)(ours ? bulwark::model::fast_max_pool2d(x, k) : torch::max_pool2d(x, k));
      };
      auto recorded = [&](bool ours) {  // the forward of the step alone: indices / offsets kept
        auto xr = x.detach().requires_grad_(true);
        (void)(ours ? bulwark::model::fast_max_pool2d(xr, k) : torch::max_pool2d(xr, k));
      };
      for (const auto& [name, pass] : std::vector<std::pair<std::string, std::function<void(bool)>>>{
               {"fwd+bwd", step}, {"fwd (rec)", recorded}, {"fwd", forward}}) {
        pass(false), pass(true);  // warm
        std::vector<double> a, o;
        for (int i = 0; i < pairs; ++i) {
          if (i % 2) {
            a.push_back(ms([&] { pass(false); }));
            o.push_back(ms([&] { pass(true); }));
          } else {
            o.push_back(ms([&] { pass(true); }));
            a.push_back(ms([&] { pass(false); }));
          }
        }
        const std::string in = "[" + std::to_string(shape[0]) + "," + std::to_string(shape[1]) + "," +
                               std::to_string(shape[2]) + "," + std::to_string(shape[3]) + "]";
        std::printf("  %-22s %-5s %-9s %9.2f %9.2f %7.3f\n", in.c_str(), dtype == torch::kFloat ? "fp32" : "bf16",
                    name.c_str(), median(a), median(o), median(o) / median(a));
      }
    }
  }
  return 0;
}
