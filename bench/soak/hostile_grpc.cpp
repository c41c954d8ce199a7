// bench/soak/hostile_grpc.cpp — the hostile gRPC clients (clients.h): invalid, oversized and
// unauthenticated calls, each of which must get its documented status naming what is wrong.
#include <cstdint>
#include <functional>

#include "clients.h"
#include "requests.h"

namespace bulwark::soak {
namespace {

struct GrpcCase {
  std::string kind;
  std::function<grpc::Status(inference::GRPCInferenceService::Stub&, uint64_t)> call;
  grpc::StatusCode want;
  std::string names;
};

// The first six: invalid or oversized; the rest: unauthenticated.
std::vector<GrpcCase> hostile_grpc_cases(const Soak& s, std::mt19937_64& rng) {
  const auto one = image_values(1, rng);
  const auto rows = image_values(kMaxBatch + 1, rng);
  const auto big = image_values(kMaxBodyBytes / 4 / kValues * 3 / 2, rng);
  const std::string t = s.ws.infer_token, wrong = "wrong-" + s.ws.infer_token;
  auto infer = [](const std::string& token, inference::ModelInferRequest q) {
    return [token, q](inference::GRPCInferenceService::Stub& stub, uint64_t n) {
      auto mine = q;
      auto name = mine.model_name();
      replace_all(name, "{n}", std::to_string(n));
      mine.set_model_name(name);
      grpc::ClientContext ctx;
      set_call(ctx, token);
      inference::ModelInferResponse r;
      return stub.ModelInfer(&ctx, mine, &r);
    };
  };
  auto shape = grpc_request("good", one, 1);
  shape.mutable_inputs(0)->set_shape(3, 27);
  shape.mutable_raw_input_contents(0)->resize(28 * 27 * 4);  // consistent: only the shape is wrong
  auto raw = grpc_request("good", one, 1);
  raw.mutable_raw_input_contents(0)->resize(100);
  auto datatype = grpc_request("good", one, 1);
  datatype.mutable_inputs(0)->set_datatype("BYTES");
  return {
      {"invalid-grpc/wrong-shape", infer(t, shape), grpc::INVALID_ARGUMENT, "shape"},
      {"invalid-grpc/raw-size", infer(t, raw), grpc::INVALID_ARGUMENT, "raw_input_contents"},
      {"invalid-grpc/wrong-datatype", infer(t, datatype), grpc::INVALID_ARGUMENT, "datatype"},
      {"invalid-grpc/unknown-model", infer(t, grpc_request("nope-{n}", one, 1)), grpc::NOT_FOUND, "nope-"},
      {"oversized-grpc/too-many-rows", infer(t, grpc_request("good", rows, kMaxBatch + 1)), grpc::INVALID_ARGUMENT,
       "rows"},
      {"oversized-grpc/message-over-limit", infer(t, grpc_request("good", big, static_cast<int>(big.size() / kValues))),
       grpc::RESOURCE_EXHAUSTED, "larger than max"},
      {"unauth-grpc/no-token", infer("", grpc_request("ghost-{n}", one, 1)), grpc::UNAUTHENTICATED, "token"},
      {"unauth-grpc/wrong-token", infer(wrong, grpc_request("ghost-{n}", one, 1)), grpc::UNAUTHENTICATED, "token"},
      {"unauth-grpc/load-without-admin",
       [t](inference::GRPCInferenceService::Stub& stub, uint64_t n) {
         grpc::ClientContext ctx;
         set_call(ctx, t);
         inference::RepositoryModelLoadRequest q;
         q.set_model_name("ghost-" + std::to_string(n));
         inference::RepositoryModelLoadResponse r;
         return stub.RepositoryModelLoad(&ctx, q, &r);
       },
       grpc::PERMISSION_DENIED, "admin"},
      {"unauth-grpc/metadata-no-token",
       [](inference::GRPCInferenceService::Stub& stub, uint64_t n) {
         grpc::ClientContext ctx;
         set_call(ctx, "");
         inference::ModelMetadataRequest q;
         q.set_name("ghost-" + std::to_string(n));
         inference::ModelMetadataResponse r;
         return stub.ModelMetadata(&ctx, q, &r);
       },
       grpc::UNAUTHENTICATED, "token"},
  };
}

}  // namespace

void hostile_grpc(Soak& s, Tally& t, int index) {
  std::mt19937_64 rng(s.seed * 1000 + 200 + static_cast<uint64_t>(index));
  const auto cases = hostile_grpc_cases(s, rng);
  auto stub = s.grpc();
  for (uint64_t i = 0; !s.stop_load; ++i) {
    // Two clients: the invalid/oversized half and the unauthenticated half of the list.
    const auto& k = cases[(index == 0 ? 0 : 6) + i % (index == 0 ? 6 : cases.size() - 6)];
    const auto st = k.call(*stub, i);
    const std::string code = code_name(st.error_code());
    if (st.error_code() != k.want)
      s.record(t, k.kind, code, Verdict::kFailed, st.error_message());
    else if (!contains(st.error_message(), k.names)) {
      s.record(t, k.kind, code + " not naming '" + k.names + "'", Verdict::kFailed, st.error_message());
    } else {
      s.record(t, k.kind, code, Verdict::kExpected);
    }
  }
}

}  // namespace bulwark::soak
