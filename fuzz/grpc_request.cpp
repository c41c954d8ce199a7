// fuzz/grpc_request.cpp — the V2 gRPC ModelInferRequest: the bytes parsed as the protobuf message
// (as gRPC does before calling the service), then turned into the core's request the way
// GrpcFrontend's ModelInfer does, then the checks the core applies next (serve/validate.h).
//
// The decoder (decode_input) is private to grpc_frontend.cpp, so this target compiles that file
// into itself: it fuzzes the frontend's own code, not a copy. Moving the decoder into a header of
// its own (as rest_codec.h is for REST) would let this call it like any other caller.
#include "serve/grpc_frontend.cpp"  // NOLINT(bugprone-suspicious-include)

#include "fuzz_util.h"
#include "model/spec.h"

// Protobuf logs every string field with invalid UTF-8 it refuses; quiet, so the fuzzer's own
// output stays readable.
extern "C" int LLVMFuzzerInitialize(int*, char***) {
  google::protobuf::SetLogHandler([](google::protobuf::LogLevel, const char*, int, const std::string&) {});
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace bulwark;
  static const model::ModelSpec spec = model::default_spec();
  inference::ModelInferRequest q;
  if (!q.ParseFromArray(data, static_cast<int>(size))) return 0;  // gRPC answers INTERNAL itself

  // The limits the core hands the decoder for a 1x28x28 model at --max-batch 32.
  serve::BodyLimits limits;
  limits.max_elements = 1 << 24;
  limits.max_rows = 32;
  limits.values_per_row = 784;
  fuzz::expect_only_errors([&] {
    // ModelInfer's decoder, as written there (grpc_frontend.cpp).
    serve::InferRequest req;
    req.id = q.id();
    if (req.id.size() > 256) throw invalid_argument("id is longer than 256 characters");
    for (int k = 0; k < q.inputs_size(); ++k) req.inputs.push_back(serve::decode_input(q, k, limits));
    for (const auto& o : q.outputs()) req.outputs.push_back({o.name(), false});

    for (const auto& in : req.inputs) {
      const int64_t count = serve::checked_element_count(in.shape, limits.max_elements, "input");
      fuzz::check(static_cast<int64_t>(in.values.size()) == count, "a decoded input holds exactly its shape");
    }
    serve::check_requested_outputs(req);
    const auto x = serve::to_model_input(req, spec, limits.max_elements, limits.max_rows);
    fuzz::check(x.dim() == 4 && x.numel() == static_cast<int64_t>(req.inputs[0].values.size()),
                "model input keeps every value");
  });
  return 0;
}
