// poison/digest.h — a training set's identity by content: what a scan vouches for, and what the
// loop's gate (gate.require_poison_scan) looks up before it promotes a model trained on it.
#pragma once

#include <string>

#include "data/dataset.h"

namespace bulwark::poison {

// SHA-256 (hex) over the set's shape, its images (uint8, row by row) and its labels: two loads of
// the same rows at the same input shape give the same digest, whatever path they came from; one
// changed pixel or label gives another.
std::string dataset_digest(const data::Dataset& d);

}  // namespace bulwark::poison
