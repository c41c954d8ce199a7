// poison/neighbours.h — which label an image's look carries: the labels of its nearest neighbours in
// pixel space. A relabelled (poisoned) image still looks like its source class, so its neighbours
// mostly carry other labels than its own; a clean image's mostly carry its own.
#pragma once

#include <cstdint>

#include <torch/types.h>

#include "data/dataset.h"

namespace bulwark::poison {

// For each row in `queries` (int64 row ids of `d`): the fraction of its `k` nearest neighbours (L2
// over the [0, 1] pixels) among the rows `reference`, itself excluded, whose label is not the
// query's own label. double [queries]. The k are re-ranked from the nearest few dozen by a trimmed
// distance that ignores each pair's largest 5 % of pixel differences (see the .cpp).
torch::Tensor other_label_fraction(const data::Dataset& d, const torch::Tensor& queries, const torch::Tensor& reference,
                                   int64_t k);

}  // namespace bulwark::poison
