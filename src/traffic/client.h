// traffic/client.h — the load generator's side of the KServe V2 REST protocol: one-image inference
// requests (binary tensor extension, so FP32 inputs arrive bit-exact), decoding the answer
// (logits, id, model_version, the guard's attack_flagged when exposed) and labelled feedback.
// cpp-httplib stays behind this header.
//
// Thread-safety: a V2Client belongs to one thread; stop() may be called from any thread to cut
// requests in flight short.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace httplib {
class Client;
}

namespace bulwark::traffic {

struct Endpoint {
  std::string scheme;  // "http" | "https"
  std::string host;
  int port = 0;
  std::string origin() const;  // scheme://host:port
};

// http[s]://HOST[:PORT][/]; a path, user info, query or bad port throws invalid_argument naming --url.
Endpoint parse_url(const std::string& url);
// Letters, digits, '.', '_', '-' (it goes into the URL path); others throw naming --model.
void check_model_name(const std::string& name);

struct ClientOptions {
  std::string url;             // http://127.0.0.1:8000
  std::string model;           // the served model's name
  std::string token;           // bearer token for inference; empty = no Authorization header
  std::vector<std::string> tokens;  // several: worker i sends as tokens[i % size] (the runner)
  std::string feedback_token;  // bearer token for feedback (role feedback); empty = none
  double timeout_s = 10;       // connect, read and write timeouts

  void validate() const;  // throws invalid_argument naming --url, --model, --timeout-s
};

struct InferResult {
  bool ok = false;
  int status = 0;  // HTTP status; 0 = transport error or timeout
  std::string error;
  std::string id;  // what feedback refers to
  std::string model_version;
  int64_t rows = 0;
  int64_t classes = 0;
  std::vector<float> logits;       // rows x classes
  std::vector<int64_t> predicted;  // argmax per row (first maximum, as torch::argmax)
  int64_t flagged = 0;             // rows the guard flagged; 0 when the server does not expose scores
  double latency_ms = 0;
};

// A V2 request for one FP32 tensor named "input" of `shape`, values sent as raw little-endian
// bytes after the JSON; asks for the logits. *json_length: the Inference-Header-Content-Length.
std::string encode_infer_request(const float* values, const std::vector<int64_t>& shape, size_t* json_length);
// Decodes a 200 answer's body (the JSON part when `json_length` > 0). A body without FP32 logits
// of shape [rows, K] comes back with ok = false and the reason in error.
InferResult decode_infer_response(const std::string& body, size_t json_length = 0);
std::string encode_feedback(const std::string& id, const std::vector<int64_t>& labels);

class V2Client {
 public:
  explicit V2Client(ClientOptions options);
  ~V2Client();
  V2Client(const V2Client&) = delete;
  V2Client& operator=(const V2Client&) = delete;

  // One request; never throws for transport or server errors (they come back in the result).
  InferResult infer(const float* values, const std::vector<int64_t>& shape);
  // Posts labels for an earlier answer; returns "" on success, the reason otherwise.
  std::string feedback(const std::string& id, const std::vector<int64_t>& labels);
  void stop();

  const ClientOptions& options() const { return options_; }

 private:
  ClientOptions options_;
  std::unique_ptr<httplib::Client> http_;
};

}  // namespace bulwark::traffic
