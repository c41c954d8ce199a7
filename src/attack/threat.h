// attack/threat.h — the threat model every attack obeys: a norm ball of radius eps around the
// clean input, intersected with the model's valid input range. Attacks project, then clamp.
#pragma once

#include <string>

#include <torch/types.h>

namespace bulwark::attack {

enum class Norm { kLinf, kL2 };

Norm parse_norm(const std::string& s);  // "linf" | "l2"; others throw naming --norm
std::string to_string(Norm n);

struct Threat {
  Norm norm = Norm::kLinf;
  double eps = 0.0;
  double lo = 0.0;  // valid input range (from the model's spec)
  double hi = 1.0;

  // Throws invalid_argument naming --eps when eps < 0 or not finite.
  void validate() const;
  // Projects x_adv into the eps-ball around x, then clamps to [lo, hi].
  torch::Tensor project(const torch::Tensor& x_adv, const torch::Tensor& x) const;
  // Per-sample perturbation norm of d, shape [N].
  torch::Tensor norm_of(const torch::Tensor& d) const;
  // A uniformly random start inside the ball (L∞: uniform cube; L2: random direction, radius ~ U(0,eps)).
  torch::Tensor random_start(const torch::Tensor& x, torch::Generator& gen) const;
};

// Per-sample L2 norm over all but the first dimension, shape [N, 1, ..., 1] for broadcasting.
torch::Tensor l2_norm_keepdim(const torch::Tensor& t);
// Per-sample L2 normalisation (zero rows stay zero).
torch::Tensor l2_normalize(const torch::Tensor& t);

}  // namespace bulwark::attack
