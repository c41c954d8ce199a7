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
// once the server stops, a request still arriving gets one more second (kStopGrace), then is given
// up (drain waits for answers, not for slow senders); a request over a bound ends its connection (the answer, where one was written, says
// `Connection: close`). A handler may also ask for the connection to end after its answer
// (close_connection_after_response): a request refused before its body was read must not leave
// that body to be parsed as the next request. Closing drains what the client still sends, briefly,
// so the answer is not lost to a reset.
//
// Threads are spent on requests, not on connections. A connection waits in one poller thread (the
// reactor) until its request head is complete — a slowloris client trickling header bytes, or an
// idle keep-alive connection, holds no thread — and only then joins a bounded queue for the
// --threads request threads; after its answer it goes back to the reactor. Limits, each answered
// with 503 and `Connection: close`: open connections in all (--max-connections), from one client
// address (--max-connections-per-client), complete requests queued for a thread (4 x --threads), and
// time spent queued (kQueueDeadline).
//
// HTTPS keeps cpp-httplib's own SSL connection loop (these bounds do not apply there; see
// docs/security.md): terminate TLS in front of the server, or accept that gap.
#pragma once

#include <httplib.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace bulwark::serve {

// BoundedHttpServer overrides cpp-httplib internals (the private virtual process_and_close_socket,
// process_request, svr_sock_, and that listen() runs the task queue's enqueue once per accepted
// socket) as they are in 0.11.4, Debian 12's version: another version must be read again first.
constexpr bool same_text(const char* a, const char* b) {
  return *a == *b && (*a == '\0' || same_text(a + 1, b + 1));
}
static_assert(same_text(CPPHTTPLIB_VERSION, "0.11.4"),
              "serve/http_connection overrides cpp-httplib 0.11.4 internals: check them against this version");

constexpr size_t kMaxHeadBytes = 64 * 1024;
constexpr auto kHeadTimeout = std::chrono::seconds(10);
constexpr auto kRequestReadTimeout = std::chrono::seconds(30);
constexpr auto kQueueDeadline = std::chrono::seconds(2);

struct ConnectionLimits {
  size_t threads = 128;               // request threads
  size_t max_connections = 4096;      // open connections in all
  size_t max_per_address = 256;       // open connections from one client address; 0: no limit
  size_t max_queued = 0;              // complete requests waiting for a thread; 0: 4 x threads
};

// What the reactor refused or gave up, for /metrics and tests.
struct ConnectionCounters {
  uint64_t refused_full = 0;      // --max-connections reached
  uint64_t refused_address = 0;   // --max-connections-per-client reached
  uint64_t refused_queue = 0;     // the request queue full, or a request queued past kQueueDeadline
  uint64_t head_timeouts = 0;     // a request head that did not arrive within kHeadTimeout
  size_t open = 0;                // connections open now
};

// Called by a handler on the connection's thread: the connection ends once this answer is written.
void close_connection_after_response();

// httplib::Server with the bounded connection loop above. It brings its own request threads:
// do not set new_task_queue.
class BoundedHttpServer : public httplib::Server {
 public:
  BoundedHttpServer(size_t max_body_bytes, ConnectionLimits limits);
  ~BoundedHttpServer() override;
  ConnectionCounters counters() const;

  class Reactor;

 private:
  friend class Reactor;
  bool process_and_close_socket(socket_t sock) override;
  // On a request thread: answers the requests of one connection whose head has arrived (`head`:
  // the bytes read so far), then hands it back to the reactor or closes it.
  void serve(int fd, std::string head, size_t requests_left, const std::string& address);

  size_t max_body_bytes_;
  std::unique_ptr<Reactor> reactor_;
};

}  // namespace bulwark::serve
