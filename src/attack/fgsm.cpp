#include "attack/fgsm.h"

#include <torch/torch.h>

#include "attack/losses.h"

namespace bulwark::attack {

torch::Tensor steepest_direction(const torch::Tensor& grad, Norm norm) {
  return norm == Norm::kLinf ? grad.sign() : l2_normalize(grad);  // a new tensor: callers may update it in place
}

nlohmann::json FgsmOptions::to_json() const {
  auto j = threat_json();
  j["attack"] = "fgsm";
  j["random_start"] = random_start_;
  j["step_size"] = step_size_;
  return j;
}

torch::Tensor Fgsm::perturb(const LogitsFn& f, const torch::Tensor& x, const torch::Tensor& y) {
  cost_ = {};
  const Threat& t = threat();
  torch::Tensor start = x;
  if (options_.random_start()) {
    auto gen = make_generator(options_.seed());
    start = t.random_start(x, gen);
  }
  const auto g = input_gradient(
      f, start, [&](const torch::Tensor& z, int64_t s, int64_t len) { return ce_loss(z, y.narrow(0, s, len)); },
      options_.batch_size());
  cost_.gradient_passes += x.size(0);
  torch::NoGradGuard no_grad;
  return t.project(start + options_.step_size() * steepest_direction(g.grad, t.norm), x);
}

}  // namespace bulwark::attack
