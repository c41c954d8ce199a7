// detect/detail/cells.h — a query's low-resolution view, shared by the per-client detectors
// (stateful.h's near-duplicate distances, extraction.h's PRADA distances): average pooling into at
// most grid x grid cells per channel group (three groups at most), scaled to 0..255.
#pragma once

#include <cstdint>
#include <vector>

#include "detect/stateful.h"

namespace bulwark::detect::detail {

// Values outside [lo, hi] and NaN are clamped (NaN to lo) before pooling. `who` names the
// detector in the error a query without values gets.
std::vector<uint8_t> pooled_cells(const float* x, Shape shape, int64_t grid, double lo, double hi, const char* who);

}  // namespace bulwark::detect::detail
