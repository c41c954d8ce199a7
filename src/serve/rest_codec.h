// serve/rest_codec.h — the V2 REST wire format: JSON request/response bodies, including Triton's
// binary tensor data extension (a JSON header of Inference-Header-Content-Length bytes followed by
// raw little-endian tensors, each input's size in parameters.binary_data_size).
// Pure functions with no I/O; every malformed body throws invalid_argument naming the field.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "serve/types.h"

namespace bulwark::serve {

struct RestLimits {
  int64_t max_elements = 1 << 24;  // per tensor (--max-elements)
  // Rows per request (--max-batch) and the model's values per row; when both are set, a JSON
  // document holding more than max_rows * values_per_row + kJsonOverheadValues values (every
  // number, string, key, array and object counts) is refused while it is parsed, so the parsed
  // document never grows past what the model could take. 0 = no limit.
  int64_t max_rows = 0;
  int64_t values_per_row = 0;
  int max_json_depth = 32;
};
// Values a request may hold besides its input data: id, names, shapes, parameters, outputs.
constexpr int64_t kJsonOverheadValues = 1024;

// body: the whole HTTP body; json_length: the Inference-Header-Content-Length header (nullopt
// when absent, then the whole body is JSON and no binary data may follow).
InferRequest parse_infer_request(const std::string& body, std::optional<size_t> json_length, const RestLimits& limits);

// Serialises a response. Outputs marked binary go after the JSON, in order; *json_length is set to
// the JSON's size when any did (the caller sends it as Inference-Header-Content-Length).
std::string format_infer_response(const InferResponse& r, std::optional<size_t>* json_length);

nlohmann::json model_metadata_json(const ModelMetadata& md);
nlohmann::json error_json(const std::string& message);
// The guard's response parameters, shared by REST and gRPC (V2 parameters hold scalars only):
// attack_score (max over inputs), attack_flagged (any), attack_flagged_count, attack_scores
// (comma-separated, one per input row), attack_scorer.
nlohmann::json guard_parameters(const InferResponse& r);

}  // namespace bulwark::serve
