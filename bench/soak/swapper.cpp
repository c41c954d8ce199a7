// bench/soak/swapper.cpp — the hot-swap client (clients.h): every kSwapEveryS the good model's
// file is rewritten and the server sent SIGHUP, or an admin repository load names the other
// variant, in turn; each must give the model a new version while the load goes on.
#include <signal.h>

#include <thread>

#include "clients.h"

namespace bulwark::soak {

// Every kSwapEveryS: SIGHUP with the live file rewritten, or an admin load of the other variant,
// in turn; each must give the model a new version. /metrics is scraped each time too.
void swapper(Soak& s, Tally& t) {
  auto c = s.http(s.ws.admin_token);
  auto version = [&c]() -> std::string {
    const auto r = c.Get("/v2/models/good");
    const auto j = r && r->status == 200 ? json::parse(r->body, nullptr, false) : json();
    const bool ok = j.is_object() && j.contains("versions") && j["versions"].is_array() && !j["versions"].empty() &&
                    j["versions"][0].is_string();
    return ok ? j["versions"][0].get<std::string>() : "";
  };
  auto next = Clock::now();
  for (int k = 0; !s.stop_load; ++k) {
    next += std::chrono::seconds(kSwapEveryS);
    while (!s.stop_load && Clock::now() < next) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    if (s.stop_load) break;
    const auto before = version();
    const std::string variant = (k / 2) % 2 ? "good-a.pt" : "good-b.pt";
    std::string kind, result, detail;
    bool ok = false;
    if (k % 2 == 0) {
      kind = "swap/sighup";
      fs::copy_file(s.ws.file(variant), s.ws.live() + ".tmp", fs::copy_options::overwrite_existing);
      fs::rename(s.ws.live() + ".tmp", s.ws.live());
      s.server->signal(SIGHUP);
      const auto t0 = Clock::now();
      std::string now = before;
      while (now == before && since_s(t0) < kSwapEveryS - 1) {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
        now = version();
      }
      ok = now != before && !now.empty();
      result = ok ? "new version" : "version unchanged after " + std::to_string(kSwapEveryS - 1) + " s";
      detail = before + " -> " + now;
    } else {
      kind = "swap/admin-load";
      const auto r = c.Post("/v2/repository/models/good/load", json{{"parameters", {{"path", variant}}}}.dump(),
                            "application/json");
      result = r ? std::to_string(r->status) : "transport " + httplib::to_string(r.error());
      ok = r && r->status == 200 && version() != before;
      detail = r ? r->body : "";
    }
    if (ok) ++s.swaps;
    s.record(t, kind, result, ok ? Verdict::kExpected : Verdict::kFailed, detail);
    const auto m = c.Get("/metrics");
    s.record(t, "metrics/scrape", m ? std::to_string(m->status) : "transport",
             m && m->status == 200 ? Verdict::kExpected : Verdict::kFailed);
  }
}

}  // namespace bulwark::soak
