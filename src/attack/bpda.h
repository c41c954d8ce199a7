// attack/bpda.h — Backward Pass Differentiable Approximation (Athalye et al. 2018): the forward
// pass runs the real, non-differentiable preprocessor; the backward pass treats it as the
// identity (straight-through), so gradient attacks see through input-transformation defenses.
#pragma once

#include <functional>

#include "attack/base.h"

namespace bulwark::attack {

using Preprocess = std::function<torch::Tensor(const torch::Tensor&)>;

// f(g(x)) forward; d/dx taken as f'(g(x)).
LogitsFn bpda(LogitsFn f, Preprocess g);

}  // namespace bulwark::attack
