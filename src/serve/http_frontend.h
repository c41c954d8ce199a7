// serve/http_frontend.h — the V2 REST frontend (cpp-httplib): translates HTTP to the core's
// types and Error kinds to status codes. Lifecycle as Triton's: create (binds, may throw), start
// (serves on its own thread), stop (stops accepting, finishes requests in flight, joins).
#pragma once

#include <atomic>
#include <cstddef>
#include <memory>
#include <string>
#include <thread>

#include "serve/core.h"
#include "serve/http_connection.h"

namespace httplib {
class Server;
}

namespace bulwark::serve {

struct HttpOptions {
  std::string host = "127.0.0.1";
  int port = 8000;                       // 0 = any free port
  int threads = 128;                     // request threads (a connection holds one only while a request is answered)
  size_t max_connections = 4096;         // open connections in all (503 beyond)
  size_t max_connections_per_client = 256;  // from one client address; 0: no limit (behind a proxy: raise it)
  size_t max_body_bytes = 64u << 20;     // larger bodies get 413
  std::string tls_cert, tls_key;         // both or neither: HTTPS

  void validate() const;
};

class HttpFrontend {
 public:
  HttpFrontend(InferenceCore& core, HttpOptions options);
  ~HttpFrontend();
  HttpFrontend(const HttpFrontend&) = delete;
  HttpFrontend& operator=(const HttpFrontend&) = delete;

  int port() const { return port_; }
  bool tls() const { return !options_.tls_cert.empty(); }
  void start();
  void stop();
  // The plain-HTTP connection reactor's refusals (zeros for HTTPS).
  ConnectionCounters connection_counters() const;

 private:
  void register_routes();

  InferenceCore& core_;
  const HttpOptions options_;
  std::unique_ptr<httplib::Server> server_;
  int port_ = 0;
  std::thread thread_;
  std::atomic<bool> listen_returned_{false};  // listen_after_bind() has returned
};

}  // namespace bulwark::serve
