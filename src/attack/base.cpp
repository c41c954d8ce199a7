#include "attack/base.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include "core/error.h"
#include "model/model.h"

namespace bulwark::attack {

LogitsFn logits_of(const model::Model& m) {
  return [&m](const torch::Tensor& x) { return m.logits(x); };
}

InputGradient input_gradient(const LogitsFn& f, const torch::Tensor& x,
                             const std::function<torch::Tensor(const torch::Tensor&)>& loss) {
  torch::AutoGradMode enable(true);
  auto xr = x.detach().requires_grad_(true);
  auto logits = f(xr);
  auto per_sample = loss(logits);
  auto grad = torch::autograd::grad({per_sample.sum()}, {xr})[0];
  return {grad.detach(), logits.detach(), per_sample.detach()};
}

torch::Generator make_generator(uint64_t seed) { return at::make_generator<at::CPUGeneratorImpl>(seed); }

void check_range(const char* flag, double v, double lo, double hi) {
  if (!(v >= lo && v <= hi)) {
    throw invalid_argument(std::string(flag) + " must be in [" + std::to_string(lo) + ", " + std::to_string(hi) +
                           "], got " + std::to_string(v));
  }
}

}  // namespace bulwark::attack
