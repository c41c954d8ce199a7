#include "serve/http_connection.h"

#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <string>

namespace bulwark::serve {
namespace {

using Clock = std::chrono::steady_clock;

thread_local bool t_close_after_response = false;

constexpr size_t kChunkFramingBytes = 64 * 1024;  // chunk-size lines and trailers over the body limit
constexpr size_t kReadBufferBytes = 16 * 1024;
constexpr auto kLingerTime = std::chrono::milliseconds(500);
constexpr size_t kLingerBytes = 1u << 20;

// Waits for `events` on fd until `deadline`; true when ready.
bool wait_for(int fd, short events, Clock::time_point deadline) {
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) return false;
    pollfd p{fd, events, 0};
    const int n = ::poll(&p, 1, static_cast<int>(std::min<long long>(left, 1000)));
    if (n > 0) return true;
    if (n < 0 && errno != EINTR) return false;
  }
}

void address_of(int fd, bool peer, std::string& ip, int& port) {
  sockaddr_storage addr{};
  socklen_t len = sizeof addr;
  const int rc = peer ? ::getpeername(fd, reinterpret_cast<sockaddr*>(&addr), &len)
                      : ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  if (rc != 0) return;
  char host[NI_MAXHOST], serv[NI_MAXSERV];
  if (::getnameinfo(reinterpret_cast<sockaddr*>(&addr), len, host, sizeof host, serv, sizeof serv,
                    NI_NUMERICHOST | NI_NUMERICSERV) == 0) {
    ip = host;
    port = std::atoi(serv);
  }
}

// One connection's socket, read through a buffer, with the per-request bounds of the header.
class BoundedStream : public httplib::Stream {
 public:
  BoundedStream(int fd, const std::atomic<socket_t>& listening, size_t max_body_bytes,
                std::chrono::microseconds read_timeout, std::chrono::microseconds write_timeout)
      : fd_(fd),
        listening_(listening),
        max_body_bytes_(max_body_bytes),
        read_timeout_(read_timeout),
        write_timeout_(write_timeout) {}

  // A new request starts: its head and body budgets and its deadlines are fresh.
  void begin_request() {
    const auto now = Clock::now();
    head_deadline_ = now + kHeadTimeout;
    request_deadline_ = now + kRequestReadTimeout;
    head_bytes_ = body_bytes_ = 0;
    in_head_ = true;
    tail_ = 0;
  }
  bool over_bound() const { return over_bound_; }
  bool buffered() const { return pos_ < end_; }

  bool is_readable() const override { return buffered() || wait_for(fd_, POLLIN, Clock::now() + read_timeout_); }
  bool is_writable() const override { return wait_for(fd_, POLLOUT, Clock::now() + write_timeout_); }

  ssize_t read(char* ptr, size_t size) override {
    if (over_bound_ || size == 0) return over_bound_ ? -1 : 0;
    if (!buffered() && !fill()) return over_bound_ ? -1 : last_read_;
    size_t n = std::min(size, end_ - pos_);
    if (in_head_) {
      n = std::min(n, kMaxHeadBytes - head_bytes_);
      if (n == 0) return fail();
      // The head ends at the empty line: "\n\r\n" (httplib ends headers only at "\r\n").
      for (size_t i = 0; i < n; ++i) {
        const char c = buf_[pos_ + i];
        tail_ = ((tail_ << 8) | static_cast<unsigned char>(c)) & 0xFFFFFF;
        if (tail_ == 0x0A0D0A) {
          n = i + 1;
          in_head_ = false;
          break;
        }
      }
      head_bytes_ += n;
    } else {
      n = std::min(n, max_body_bytes_ + kChunkFramingBytes - body_bytes_);
      if (n == 0) return fail();
      body_bytes_ += n;
    }
    std::memcpy(ptr, buf_ + pos_, n);
    pos_ += n;
    return static_cast<ssize_t>(n);
  }

  ssize_t write(const char* ptr, size_t size) override {
    if (!wait_for(fd_, POLLOUT, Clock::now() + write_timeout_)) return -1;
    ssize_t n;
    do {
      n = ::send(fd_, ptr, size, MSG_NOSIGNAL);
    } while (n < 0 && errno == EINTR);
    return n;
  }

  void get_remote_ip_and_port(std::string& ip, int& port) const override { address_of(fd_, true, ip, port); }
  void get_local_ip_and_port(std::string& ip, int& port) const override { address_of(fd_, false, ip, port); }
  socket_t socket() const override { return fd_; }

 private:
  ssize_t fail() {
    over_bound_ = true;
    return -1;
  }

  // Reads what the socket has, waiting at most the read timeout and never past the request's
  // deadlines. Once the server stops, a request still arriving is given up (the drain waits for
  // requests being answered, not for slow senders).
  bool fill() {
    auto deadline = std::min(Clock::now() + read_timeout_, request_deadline_);
    if (in_head_) deadline = std::min(deadline, head_deadline_);
    bool ready = false;
    while (!ready && listening_ != INVALID_SOCKET && Clock::now() < deadline) {
      ready = wait_for(fd_, POLLIN, std::min(deadline, Clock::now() + std::chrono::milliseconds(100)));
    }
    if (!ready) {
      // Past a request deadline: the client is too slow; past the read timeout: as httplib's own.
      if (Clock::now() >= request_deadline_ || (in_head_ && Clock::now() >= head_deadline_) ||
          listening_ == INVALID_SOCKET) {
        over_bound_ = true;
      }
      last_read_ = -1;
      return false;
    }
    ssize_t n;
    do {
      n = ::recv(fd_, buf_, sizeof buf_, MSG_DONTWAIT);
    } while (n < 0 && errno == EINTR);
    last_read_ = n < 0 ? -1 : 0;
    if (n <= 0) return false;
    pos_ = 0;
    end_ = static_cast<size_t>(n);
    return true;
  }

  const int fd_;
  const std::atomic<socket_t>& listening_;  // INVALID_SOCKET once the server stops
  const size_t max_body_bytes_;
  const std::chrono::microseconds read_timeout_, write_timeout_;
  char buf_[kReadBufferBytes];
  size_t pos_ = 0, end_ = 0;
  ssize_t last_read_ = 0;
  Clock::time_point head_deadline_, request_deadline_;
  size_t head_bytes_ = 0, body_bytes_ = 0;
  bool in_head_ = true;
  uint32_t tail_ = 0;
  bool over_bound_ = false;
};

// Waits up to keep_alive_timeout for the next request (cpp-httplib's keep_alive()), watching the
// listening socket so that stop() ends idle connections promptly.
bool next_request_arrives(const BoundedStream& stream, int fd, const std::atomic<socket_t>& listening,
                          std::chrono::seconds keep_alive_timeout) {
  if (stream.buffered()) return true;
  const auto deadline = Clock::now() + keep_alive_timeout;
  while (listening != INVALID_SOCKET) {
    if (Clock::now() >= deadline) return false;
    pollfd p{fd, POLLIN, 0};
    const int n = ::poll(&p, 1, 10);
    if (n > 0) return true;
    if (n < 0 && errno != EINTR) return false;
  }
  return false;
}

// Ends the connection: no more writes, then what the client still sends is read and dropped for a
// moment, so that closing with unread data (a reset) does not destroy the answer in flight.
void close_gracefully(int fd) {
  ::shutdown(fd, SHUT_WR);
  const auto deadline = Clock::now() + kLingerTime;
  char sink[4096];
  size_t drained = 0;
  while (drained < kLingerBytes && wait_for(fd, POLLIN, deadline)) {
    const ssize_t n = ::recv(fd, sink, sizeof sink, MSG_DONTWAIT);
    if (n <= 0 && !(n < 0 && (errno == EINTR || errno == EAGAIN))) break;
    if (n > 0) drained += static_cast<size_t>(n);
  }
  ::close(fd);
}

}  // namespace

void close_connection_after_response() { t_close_after_response = true; }

bool BoundedHttpServer::process_and_close_socket(socket_t sock) {
  BoundedStream stream(sock, svr_sock_, max_body_bytes_,
                       std::chrono::seconds(read_timeout_sec_) + std::chrono::microseconds(read_timeout_usec_),
                       std::chrono::seconds(write_timeout_sec_) + std::chrono::microseconds(write_timeout_usec_));
  bool ret = false;
  for (size_t count = keep_alive_max_count_; count > 0; --count) {
    if (!next_request_arrives(stream, sock, svr_sock_, std::chrono::seconds(keep_alive_timeout_sec_))) break;
    stream.begin_request();
    t_close_after_response = false;
    bool connection_closed = false;
    ret = process_request(stream, count == 1, connection_closed, nullptr);
    if (!ret || connection_closed || stream.over_bound() || t_close_after_response) break;
  }
  t_close_after_response = false;
  close_gracefully(sock);
  return ret;
}

}  // namespace bulwark::serve
