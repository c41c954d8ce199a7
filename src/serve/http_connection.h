// serve/http_connection.h — how the plain-HTTP frontend reads a connection: cpp-httplib's parsing
// and routing, over a stream that bounds what a client can make the server hold.
//
// cpp-httplib 0.11 (Debian 12) reads a request line or header line into a string that grows until
// a newline arrives: one connection sending bytes without a newline grows the server without limit
// (measured: +300 MB in 10 s from one client). It also reads a declared body in full, however large,
// to discard it, and keeps reading from a connection whose request it has already refused. The
// stream here, one per connection, enforces per request:
//   - the head (request line and headers) is at most kMaxHeadBytes and arrives within kHeadTimeout;
//   - the body is at most the frontend's --max-body-bytes plus chunk framing, and the whole request
//     arrives within kRequestReadTimeout;
// once the server stops, a request still arriving is given up (drain waits for answers, not for
// slow senders); a request over a bound ends its connection (the answer, where one was written, says
// `Connection: close`). A handler may also ask for the connection to end after its answer
// (close_connection_after_response): a request refused before its body was read must not leave
// that body to be parsed as the next request. Closing drains what the client still sends, briefly,
// so the answer is not lost to a reset.
//
// HTTPS keeps cpp-httplib's own SSL connection loop (these bounds do not apply there; see
// docs/security.md): terminate TLS in front of the server, or accept that gap.
#pragma once

#include <httplib.h>

#include <chrono>
#include <cstddef>

namespace bulwark::serve {

constexpr size_t kMaxHeadBytes = 64 * 1024;
constexpr auto kHeadTimeout = std::chrono::seconds(10);
constexpr auto kRequestReadTimeout = std::chrono::seconds(30);

// Called by a handler on the connection's thread: the connection ends once this answer is written.
void close_connection_after_response();

// httplib::Server with the bounded connection loop above.
class BoundedHttpServer : public httplib::Server {
 public:
  explicit BoundedHttpServer(size_t max_body_bytes) : max_body_bytes_(max_body_bytes) {}

 private:
  bool process_and_close_socket(socket_t sock) override;

  size_t max_body_bytes_;
};

}  // namespace bulwark::serve
