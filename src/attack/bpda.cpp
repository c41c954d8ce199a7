#include "attack/bpda.h"

#include <torch/torch.h>

namespace bulwark::attack {

LogitsFn bpda(LogitsFn f, Preprocess g) {
  const bool exact = f.exact_gradient_pass();
  auto straight_through = [f = std::move(f), g = std::move(g)](const torch::Tensor& x) {
    torch::Tensor gx;
    {
      torch::NoGradGuard no_grad;
      gx = g(x.detach());
    }
    // Value g(x), gradient of the identity.
    return f(x + (gx - x).detach());
  };
  return LogitsFn(std::move(straight_through), exact);
}

}  // namespace bulwark::attack
