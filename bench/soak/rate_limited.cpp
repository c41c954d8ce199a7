// bench/soak/rate_limited.cpp — the client of the rate-limited token (clients.h): over twice its
// rate, so the server's 429 with Retry-After is an expected answer here and nowhere else.
#include <thread>

#include "clients.h"
#include "requests.h"

namespace bulwark::soak {

// Over twice its token's rate (an inference, then metadata reads: the rate counts requests, and
// the reads are quick): 200, or 429 with Retry-After.
void rate_limited(Soak& s, Tally& t) {
  std::mt19937_64 rng(s.seed * 1000 + 400);
  const auto body = json_body(image_values(1, rng), 1);
  auto c = s.http(s.ws.limited_token);
  auto check = [&](const std::string& kind, const httplib::Result& r) {
    if (!r)
      s.record(t, kind, "transport " + httplib::to_string(r.error()), Verdict::kFailed);
    else if (r->status == 200)
      s.record(t, kind, "200", Verdict::kExpected);
    else if (r->status == 429 && !r->get_header_value("Retry-After").empty()) {
      s.record(t, kind, "429 with Retry-After", Verdict::kExpected);
    } else if (r->status == 503 && kind == "rate-limited/rest-infer") {
      s.record(t, kind, "503", Verdict::kRefused, r->body);
    } else {
      s.record(t, kind, std::to_string(r->status), Verdict::kFailed, r->body);
    }
  };
  while (!s.stop_load) {
    const auto t0 = Clock::now();
    check("rate-limited/rest-infer", c.Post("/v2/models/good/infer", body, "application/json"));
    while (!s.stop_load && since_s(t0) < 0.25) {
      check("rate-limited/rest-metadata", c.Get("/v2/models/good"));
      std::this_thread::sleep_for(std::chrono::duration<double>(0.4 / kLimitedRatePerS));
    }
  }
}

}  // namespace bulwark::soak
