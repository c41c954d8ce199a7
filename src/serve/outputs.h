// serve/outputs.h — shaping a batch result into the outputs a request asked for (logits,
// probabilities, label), each FP32 or BYTES, JSON or binary as requested.
#pragma once

#include <ATen/core/Tensor.h>

#include <vector>

#include "model/spec.h"
#include "serve/types.h"

namespace bulwark::serve {

// logits [n, K] of this request's rows; no outputs requested = every output (logits,
// probabilities, label), as the protocol says.
std::vector<InferOutput> build_outputs(const InferRequest& r, const at::Tensor& logits, const model::ModelSpec& spec);

}  // namespace bulwark::serve
