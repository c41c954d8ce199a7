// serve/access_log.h — one JSON line per inference request, whatever happened: time, request id,
// token id, transport, model, version, latency, status, error, and (when the guard ran) the
// highest attack score and whether any row was flagged.
//
// Thread-safety: write() may be called from any thread; lines never interleave.
#pragma once

#include <cstdio>
#include <mutex>
#include <string>

#include "serve/types.h"

namespace bulwark::serve {

struct AccessRecord {
  std::string request_id, token_id, transport, model, version, error;
  double latency_s = 0;
  int status = 200;
  float max_score = -1;                     // < 0: no score
  bool flagged = false;
};

class AccessLog {
 public:
  // Longest string field written (request id, token id, model, version), and the error's: longer
  // ones are cut and say by how much.
  static constexpr size_t kMaxFieldBytes = 256;
  static constexpr size_t kMaxErrorBytes = 1024;
  // A file (appended), "-" for stderr, or "off" / "" for none.
  explicit AccessLog(const std::string& target);
  ~AccessLog();
  AccessLog(const AccessLog&) = delete;
  AccessLog& operator=(const AccessLog&) = delete;

  void write(const AccessRecord& r);

 private:
  std::mutex mu_;
  FILE* out_ = nullptr;
  bool own_ = false;
};

// "2026-11-21T16:20:00.123Z" for now.
std::string iso_time_now();

}  // namespace bulwark::serve
