#include "attack/base.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include "core/error.h"
#include "model/model.h"

namespace bulwark::attack {

LogitsFn logits_of(const model::Model& m) {
  return [&m](const torch::Tensor& x) {
    model::EvalMode eval(m);
    return m.logits(x);
  };
}

InputGradient input_gradient(const LogitsFn& f, const torch::Tensor& x, const ChunkLoss& loss, int64_t chunk) {
  torch::AutoGradMode enable(true);
  const int64_t n = x.size(0);
  if (n <= chunk) {
    auto xr = x.detach().requires_grad_(true);
    auto logits = f(xr);
    auto per_sample = loss(logits, 0, n);
    auto grad = torch::autograd::grad({per_sample.sum()}, {xr})[0];
    return {grad.detach(), logits.detach(), per_sample.detach()};
  }
  std::vector<torch::Tensor> grads, logits, losses;
  for (int64_t s = 0; s < n; s += chunk) {
    const int64_t len = std::min(chunk, n - s);
    auto xr = x.narrow(0, s, len).detach().requires_grad_(true);
    auto z = f(xr);
    auto per_sample = loss(z, s, len);
    grads.push_back(torch::autograd::grad({per_sample.sum()}, {xr})[0].detach());
    logits.push_back(z.detach());
    losses.push_back(per_sample.detach());
  }
  return {torch::cat(grads), torch::cat(logits), torch::cat(losses)};
}

torch::Tensor forward_chunked(const LogitsFn& f, const torch::Tensor& x, int64_t chunk) {
  torch::NoGradGuard no_grad;
  if (x.size(0) <= chunk) return f(x);
  std::vector<torch::Tensor> out;
  for (int64_t s = 0; s < x.size(0); s += chunk) out.push_back(f(x.narrow(0, s, std::min(chunk, x.size(0) - s))));
  return torch::cat(out);
}

torch::Generator make_generator(uint64_t seed) { return at::make_generator<at::CPUGeneratorImpl>(seed); }

void check_range(const char* flag, double v, double lo, double hi) {
  if (!(v >= lo && v <= hi)) {
    throw invalid_argument(std::string(flag) + " must be in [" + std::to_string(lo) + ", " + std::to_string(hi) +
                           "], got " + std::to_string(v));
  }
}

}  // namespace bulwark::attack
