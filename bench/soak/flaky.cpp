// bench/soak/flaky.cpp — the client of the model that throws (clients.h; the model is defined in
// workspace.cpp): passing inputs must get 200/OK, tripping ones a 500/INTERNAL that names only the
// request id, never the model's source, a trace or a library.
#include <cstdint>

#include "clients.h"
#include "requests.h"

namespace bulwark::soak {
namespace {

// What a 500 from the flaky model must not carry: its TorchScript source, traces, library names.
const std::vector<std::string> kLeaks = {"Traceback",   ".py",          "at::",         "torch",
                                         "TorchScript", "flaky_secret", "RuntimeError", "mat1"};

}  // namespace

// The model that throws, alone on its batch thread (one client: a failing batch fails every
// request in it, so each batch must hold one request for passing inputs to be checked as 200).
void flaky(Soak& s, Tally& t) {
  std::mt19937_64 rng(s.seed * 1000 + 300);
  auto c = s.http(s.ws.infer_token);
  auto stub = s.grpc();
  for (uint64_t i = 0; !s.stop_load; ++i) {
    auto v = image_values(1, rng);
    const int trip = static_cast<int>(rng() % 4);  // 0, 1: passes; 2: raise; 3: error inside LibTorch
    if (trip >= 2) v[static_cast<size_t>(trip - 2)] = 1.0f;
    const std::string what = trip < 2 ? "pass" : trip == 2 ? "raise" : "aten-error";
    std::string kind, result, error;
    bool ok = false;
    if (i % 2 == 0) {
      kind = "flaky/rest-" + what;
      const auto r = c.Post("/v2/models/flaky/infer", json_body(v, 1), "application/json");
      result = r ? std::to_string(r->status) : "transport " + httplib::to_string(r.error());
      ok = r && r->status == (trip < 2 ? 200 : 500);
      error = r ? r->body : "";
    } else {
      kind = "flaky/grpc-" + what;
      grpc::ClientContext ctx;
      set_call(ctx, s.ws.infer_token);
      inference::ModelInferResponse r;
      const auto st = stub->ModelInfer(&ctx, grpc_request("flaky", v, 1), &r);
      result = code_name(st.error_code());
      ok = st.error_code() == (trip < 2 ? grpc::OK : grpc::INTERNAL);
      error = st.error_message();
    }
    if (ok && trip >= 2) {
      for (const auto& leak : kLeaks) {
        if (contains(error, leak)) {
          ok = false;
          result += " leaking '" + leak + "'";
          break;
        }
      }
      if (ok && !contains(error, "internal error")) ok = false, result += " not generic";
    }
    s.record(t, kind, result, ok ? Verdict::kExpected : Verdict::kFailed, error);
  }
}

}  // namespace bulwark::soak
