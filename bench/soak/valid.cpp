// bench/soak/valid.cpp — the valid clients (clients.h): closed-loop inference over REST (JSON and
// binary tensors) and gRPC, each answer timed for the latency table.
#include <cstdint>

#include "clients.h"
#include "requests.h"

namespace bulwark::soak {

void valid_rest(Soak& s, Tally& t, int index) {
  std::mt19937_64 rng(s.seed * 1000 + static_cast<uint64_t>(index));
  struct Body {
    std::string text;
    size_t binary_head = 0;  // 0: JSON
  };
  std::vector<Body> bodies;
  for (int i = 0; i < 16; ++i) {
    const int rows = 1 + static_cast<int>(rng() % 4);
    const auto v = image_values(rows, rng);
    if (i % 2) {
      auto [text, head] = binary_body(v, rows);
      bodies.push_back({std::move(text), head});
    } else {
      bodies.push_back({json_body(v, rows), 0});
    }
  }
  auto c = s.http(s.ws.infer_token);
  for (uint64_t i = 0; !s.stop_load; ++i) {
    const auto& b = bodies[i % bodies.size()];
    const std::string kind = b.binary_head ? "valid/rest-binary" : "valid/rest-json";
    const auto t0 = Clock::now();
    const httplib::Headers binary{{"Inference-Header-Content-Length", std::to_string(b.binary_head)}};
    const auto r = b.binary_head ? c.Post("/v2/models/good/infer", binary, b.text, "application/octet-stream")
                                 : c.Post("/v2/models/good/infer", b.text, "application/json");
    const float ms = static_cast<float>(since_s(t0) * 1e3);
    if (!r) {
      s.record(t, kind, "transport " + httplib::to_string(r.error()), Verdict::kFailed);
    } else if (r->status == 200 && contains(r->body, "\"outputs\"")) {
      t.latency_ms.push_back(ms);
      s.record(t, kind, "200", Verdict::kExpected);
    } else if (r->status == 503) {  // queue full (this token has no rate limit: a 429 would be a failure)
      s.record(t, kind, "503", Verdict::kRefused, r->body);
    } else {
      s.record(t, kind, std::to_string(r->status), Verdict::kFailed, r->body);
    }
  }
}

void valid_grpc(Soak& s, Tally& t, int index) {
  std::mt19937_64 rng(s.seed * 1000 + 100 + static_cast<uint64_t>(index));
  std::vector<inference::ModelInferRequest> requests;
  for (int i = 0; i < 16; ++i) {
    const int rows = 1 + static_cast<int>(rng() % 4);
    requests.push_back(grpc_request("good", image_values(rows, rng), rows));
  }
  auto stub = s.grpc();
  for (uint64_t i = 0; !s.stop_load; ++i) {
    grpc::ClientContext ctx;
    set_call(ctx, s.ws.infer_token);
    inference::ModelInferResponse r;
    const auto t0 = Clock::now();
    const auto st = stub->ModelInfer(&ctx, requests[i % requests.size()], &r);
    const float ms = static_cast<float>(since_s(t0) * 1e3);
    if (st.ok() && r.outputs_size() > 0) {
      t.latency_ms.push_back(ms);
      s.record(t, "valid/grpc", "OK", Verdict::kExpected);
    } else {
      const bool refused = st.error_code() == grpc::UNAVAILABLE;  // queue full
      s.record(t, "valid/grpc", code_name(st.error_code()), refused ? Verdict::kRefused : Verdict::kFailed,
               st.error_message());
    }
  }
}

}  // namespace bulwark::soak
