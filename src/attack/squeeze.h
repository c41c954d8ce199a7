// attack/squeeze.h — feature squeezing (Xu et al. 2018) as input preprocessors: bit-depth
// reduction and median smoothing. They are not differentiable (or nearly so), which hides the
// gradient from naive attacks; they resist only non-adaptive attacks. Evaluate them with BPDA
// (attack::bpda), which `bulwark attack --defense` does.
#pragma once

#include <string>

#include "attack/bpda.h"

namespace bulwark::attack {

// Rounds each value in [lo, hi] to 2^bits levels.
Preprocess bit_depth(int bits, double lo = 0.0, double hi = 1.0);
// k x k median filter per channel (reflect padding), k in 2..7.
Preprocess median_smoothing(int k);

// "bits:4", "median:2", or a '+'-joined chain "bits:5+median:2". Errors name `flag`.
Preprocess parse_squeezer(const std::string& spec, double lo, double hi, const std::string& flag = "--defense");

}  // namespace bulwark::attack
