#include "serve/access_log.h"

#include <chrono>
#include <ctime>

#include <nlohmann/json.hpp>

#include "core/error.h"

namespace bulwark::serve {

std::string iso_time_now() {
  const auto now = std::chrono::system_clock::now();
  const auto t = std::chrono::system_clock::to_time_t(now);
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[40];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  char out[48];
  std::snprintf(out, sizeof out, "%s.%03lldZ", buf, static_cast<long long>(ms));
  return out;
}

AccessLog::AccessLog(const std::string& target) {
  if (target == "-") {
    out_ = stderr;
  } else if (target != "off" && !target.empty()) {
    out_ = std::fopen(target.c_str(), "a");
    if (!out_) throw io_error("--access-log: cannot open " + target + " for appending");
    own_ = true;
  }
}

AccessLog::~AccessLog() {
  if (own_) std::fclose(out_);
}

namespace {

// A client chooses the model name, the request id and (through them) parts of the error: each
// field is cut to a bound, so a request costs the log a bounded line whatever it sends (before, an
// 8 KB model name wrote 8 KB per unauthenticated request).
std::string clipped(const std::string& s, size_t max_bytes) {
  if (s.size() <= max_bytes) return s;
  return s.substr(0, max_bytes) + "...(+" + std::to_string(s.size() - max_bytes) + " bytes)";
}

}  // namespace

void AccessLog::write(const AccessRecord& r) {
  if (!out_) return;
  nlohmann::json j{{"time", iso_time_now()},
                   {"request_id", clipped(r.request_id, kMaxFieldBytes)},
                   {"token_id", clipped(r.token_id, kMaxFieldBytes)},
                   {"transport", clipped(r.transport, kMaxFieldBytes)},
                   {"model", clipped(r.model, kMaxFieldBytes)},
                   {"version", clipped(r.version, kMaxFieldBytes)},
                   {"latency_ms", r.latency_s * 1e3},
                   {"status", r.status}};
  if (!r.error.empty()) j["error"] = clipped(r.error, kMaxErrorBytes);
  if (r.max_score >= 0) {
    j["score"] = r.max_score;
    j["flagged"] = r.flagged;
  }
  const auto line = j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
  std::lock_guard<std::mutex> lock(mu_);
  std::fwrite(line.data(), 1, line.size(), out_);
  std::fflush(out_);
}

}  // namespace bulwark::serve
