#include "attack/threat.h"

#include <torch/torch.h>

#include <cmath>

#include "core/error.h"

namespace bulwark::attack {

Norm parse_norm(const std::string& s) {
  if (s == "linf" || s == "Linf" || s == "inf") return Norm::kLinf;
  if (s == "l2" || s == "L2") return Norm::kL2;
  throw invalid_argument("--norm: unknown norm '" + s + "' (known: linf, l2)");
}

std::string to_string(Norm n) { return n == Norm::kLinf ? "linf" : "l2"; }

void Threat::validate() const {
  if (!(eps >= 0.0) || !std::isfinite(eps)) throw invalid_argument("--eps must be a finite number >= 0, got " + std::to_string(eps));
  if (!(lo < hi)) throw invalid_argument("threat model: value range lo must be < hi");
}

torch::Tensor l2_norm_keepdim(const torch::Tensor& t) {
  std::vector<int64_t> shape(static_cast<size_t>(t.dim()), 1);
  shape[0] = t.size(0);
  return t.flatten(1).norm(2, 1).view(shape);
}

torch::Tensor l2_normalize(const torch::Tensor& t) { return t / (l2_norm_keepdim(t) + 1e-12); }

torch::Tensor Threat::project(const torch::Tensor& x_adv, const torch::Tensor& x) const {
  // One allocation, then in place: this runs every attack step over every standing point.
  torch::Tensor out = x_adv - x;
  if (norm == Norm::kLinf) {
    out.clamp_(-eps, eps);
  } else {
    out.mul_(torch::clamp_max(eps / (l2_norm_keepdim(out) + 1e-12), 1.0));
  }
  // Clamping to the range after the ball only shrinks |delta| per coordinate, so the point stays
  // inside both.
  return out.add_(x).clamp_(lo, hi);
}

torch::Tensor Threat::norm_of(const torch::Tensor& d) const {
  return norm == Norm::kLinf ? d.flatten(1).abs().amax(1) : d.flatten(1).norm(2, 1);
}

torch::Tensor Threat::random_start(const torch::Tensor& x, torch::Generator& gen) const {
  if (norm == Norm::kLinf) {
    const auto u = torch::rand(x.sizes(), gen, x.options());
    return project(x + (2 * u - 1) * eps, x);
  }
  const auto dir = l2_normalize(torch::randn(x.sizes(), gen, x.options()));
  std::vector<int64_t> shape(static_cast<size_t>(x.dim()), 1);
  shape[0] = x.size(0);
  const auto radius = torch::rand(shape, gen, x.options()) * eps;
  return project(x + dir * radius, x);
}

}  // namespace bulwark::attack
