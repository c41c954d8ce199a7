// serve/types.h — the core's request and response, independent of transport. The REST and gRPC
// frontends each translate their wire format into these types and back; neither knows the other.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace bulwark::serve {

// Datatypes accepted for the image input (FP32 values in the model's range, or UINT8 pixels
// 0..255 scaled into it). Outputs are FP32 (logits, probabilities) and BYTES (labels).
constexpr const char* kInputName = "input";

struct InferInput {
  std::string name;
  std::string datatype;  // "FP32" | "UINT8"
  std::vector<int64_t> shape;
  std::vector<float> values;  // decoded, row-major; UINT8 pixels kept as 0..255 until validation
};

struct RequestedOutput {
  std::string name;     // logits | probabilities | label
  bool binary = false;  // REST binary tensor extension
};

struct InferRequest {
  std::string model;
  std::string version;  // empty = the version being served
  std::string id;       // echoed when given; the server assigns one otherwise (for feedback)
  std::string peer;     // the transport's peer address: who the query history belongs to without auth
  std::vector<InferInput> inputs;
  std::vector<RequestedOutput> outputs;  // empty = every output the model has
  bool binary_outputs = false;           // request-level "binary_data_output"
};

struct InferOutput {
  std::string name;
  std::string datatype;  // FP32 | BYTES
  std::vector<int64_t> shape;
  std::vector<float> fp32;
  std::vector<std::string> bytes;
  bool binary = false;
};

struct InferResponse {
  std::string model;
  std::string version;
  std::string id;           // the request's id when it gave one, else feedback_id
  std::string feedback_id;  // server-issued, random: what POST .../feedback names (empty: no feedback possible)
  std::vector<InferOutput> outputs;
  // Guard hook: per-input attack score (higher = more suspicious) and flag.
  std::vector<float> attack_scores;
  std::vector<bool> attack_flags;
  std::string scorer;  // which scorer produced them; empty when the guard is off
};

// Who made a request: the token's id (never the token), for logs and rate limits.
struct Principal {
  std::string token_id = "anonymous";
  bool admin = false;  // an authenticated token with the admin role (never the anonymous caller)
};

struct TensorMetadata {
  std::string name;
  std::string datatype;
  std::vector<int64_t> shape;
};

struct ModelMetadata {
  std::string name;
  std::vector<std::string> versions;
  std::string platform = "pytorch_torchscript";
  std::vector<TensorMetadata> inputs;
  std::vector<TensorMetadata> outputs;
};

struct RepositoryEntry {
  std::string name;
  std::string version;
  std::string state;   // READY | UNAVAILABLE
  std::string reason;  // why not ready
};

}  // namespace bulwark::serve
