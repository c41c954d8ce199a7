// fuzz/rest_codec.cpp — the V2 REST request body (serve/rest_codec.h): JSON, and Triton's binary
// tensor extension (a JSON header of Inference-Header-Content-Length bytes, then raw tensors).
// Each request then goes through the checks the core applies next (serve/validate.h), against the
// default Fashion-MNIST spec, as the server does before batching.
//
// Input: the first line is the Inference-Header-Content-Length value ("-" or empty: no header,
// then the whole rest is JSON); the rest is the HTTP body.
#include <cstring>
#include <optional>
#include <string>

#include "fuzz_util.h"
#include "model/spec.h"
#include "serve/rest_codec.h"
#include "serve/validate.h"

namespace {

using namespace bulwark;

// The header as the HTTP frontend accepts it: 1..18 decimal digits.
std::optional<size_t> header_length(const std::string& line) {
  if (line.empty() || line == "-" || line.size() > 18 || line.find_first_not_of("0123456789") != std::string::npos) {
    return std::nullopt;
  }
  return std::stoull(line);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const model::ModelSpec spec = model::default_spec();
  const std::string input(reinterpret_cast<const char*>(data), size);
  const size_t nl = input.find('\n');
  const std::string line = nl == std::string::npos ? "" : input.substr(0, nl);
  const std::string body = nl == std::string::npos ? input : input.substr(nl + 1);

  // What the server passes for a 1x28x28 model at --max-batch 32 (cmd_serve's defaults).
  serve::RestLimits limits;
  limits.max_rows = 32;
  limits.values_per_row = 784;
  fuzz::expect_only_errors([&] {
    const serve::InferRequest r = serve::parse_infer_request(body, header_length(line), limits);
    fuzz::check(!r.inputs.empty(), "a parsed request has inputs");
    for (const auto& in : r.inputs) {
      const int64_t count = serve::checked_element_count(in.shape, limits.max_elements, "input");
      fuzz::check(static_cast<int64_t>(in.values.size()) <= count, "no input holds more values than its shape");
    }
    serve::check_requested_outputs(r);
    const auto x = serve::to_model_input(r, spec, limits.max_elements, limits.max_rows);
    fuzz::check(x.dim() == 4 && x.size(1) == 1 && x.size(2) == 28 && x.size(3) == 28, "model input is [N,1,28,28]");
    fuzz::check(x.numel() == static_cast<int64_t>(r.inputs[0].values.size()), "model input keeps every value");
  });
  return 0;
}
