// serve/validate.h — request validation against the model's spec, before anything runs: the one
// input's name, datatype, shape, element count and value range; the requested outputs' names.
// Errors are invalid_argument naming the input or output and the rule it broke.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

#include "model/spec.h"
#include "serve/types.h"

namespace bulwark::serve {

// Element count of a tensor shape, validated (1..8 dims, each >= 1, product <= max_elements);
// errors name `where`. Decoders call it before allocating anything.
int64_t checked_element_count(const std::vector<int64_t>& shape, int64_t max_elements, const std::string& where);

// A request carries at most max_rows rows (shape[0]; --max-batch), so it is at most one forward
// pass and a rate-limit token buys at most that many rows. max_rows 0 = no limit.
void check_rows(const std::vector<int64_t>& shape, int64_t max_rows, const std::string& where);

// The model's input as a float tensor [N, C, H, W] in the spec's range (UINT8 pixels scaled).
at::Tensor to_model_input(const InferRequest& r, const model::ModelSpec& spec, int64_t max_elements,
                          int64_t max_rows);

// Throws unless every requested output is one the server produces (logits, probabilities, label).
void check_requested_outputs(const InferRequest& r);

}  // namespace bulwark::serve
