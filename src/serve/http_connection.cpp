#include "serve/http_connection.h"

#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fcntl.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <iostream>
#include <map>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <vector>
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
// Once the server stops, how long a request whose head was read may still take to send the rest:
// a client in the middle of sending is answered, a slow one is given up.
constexpr auto kStopGrace = std::chrono::seconds(1);
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
  // `prefix`: bytes of the connection already read (by the reactor), read before the socket's.
  BoundedStream(int fd, std::string prefix, const std::atomic<socket_t>& listening, size_t max_body_bytes,
                std::chrono::microseconds read_timeout, std::chrono::microseconds write_timeout)
      : fd_(fd),
        pre_(std::move(prefix)),
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
  bool buffered() const { return pre_pos_ < pre_.size() || pos_ < end_; }
  // The bytes read from the socket but not yet by the parser (a pipelined request's start).
  std::string unread() const { return pre_.substr(std::min(pre_pos_, pre_.size())) + std::string(buf_ + pos_, end_ - pos_); }

  bool is_readable() const override { return buffered() || wait_for(fd_, POLLIN, Clock::now() + read_timeout_); }
  bool is_writable() const override { return wait_for(fd_, POLLOUT, Clock::now() + write_timeout_); }

  ssize_t read(char* ptr, size_t size) override {
    if (over_bound_ || size == 0) return over_bound_ ? -1 : 0;
    const bool from_prefix = pre_pos_ < pre_.size();
    if (!from_prefix && pos_ >= end_ && !fill()) return over_bound_ ? -1 : last_read_;
    const char* src = from_prefix ? pre_.data() + pre_pos_ : buf_ + pos_;
    size_t n = std::min(size, from_prefix ? pre_.size() - pre_pos_ : end_ - pos_);
    if (in_head_) {
      n = std::min(n, kMaxHeadBytes - head_bytes_);
      if (n == 0) return fail();
      // The head ends at the empty line: "\n\r\n" (httplib ends headers only at "\r\n").
      for (size_t i = 0; i < n; ++i) {
        tail_ = ((tail_ << 8) | static_cast<unsigned char>(src[i])) & 0xFFFFFF;
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
    std::memcpy(ptr, src, n);
    (from_prefix ? pre_pos_ : pos_) += n;
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
  // deadlines. Once the server stops, the stream has kStopGrace in all to finish, counted from when
  // it first saw the stop (a client trickling a byte at a time gets no more), then is given up (the
  // drain waits for requests being answered, not for slow senders).
  bool fill() {
    auto deadline = std::min(Clock::now() + read_timeout_, request_deadline_);
    if (in_head_) deadline = std::min(deadline, head_deadline_);
    bool ready = false;
    while (!ready && Clock::now() < std::min(deadline, stop_deadline_)) {
      if (stop_deadline_ == Clock::time_point::max() && listening_ == INVALID_SOCKET) {
        stop_deadline_ = Clock::now() + kStopGrace;
      }
      const auto until = std::min({deadline, stop_deadline_, Clock::now() + std::chrono::milliseconds(100)});
      ready = wait_for(fd_, POLLIN, until);
    }
    if (!ready) {
      // Past a request deadline: the client is too slow; past the read timeout: as httplib's own.
      if (Clock::now() >= request_deadline_ || (in_head_ && Clock::now() >= head_deadline_) ||
          Clock::now() >= stop_deadline_) {
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
  std::string pre_;
  size_t pre_pos_ = 0;
  const std::atomic<socket_t>& listening_;  // INVALID_SOCKET once the server stops
  const size_t max_body_bytes_;
  const std::chrono::microseconds read_timeout_, write_timeout_;
  char buf_[kReadBufferBytes];
  size_t pos_ = 0, end_ = 0;
  ssize_t last_read_ = 0;
  Clock::time_point head_deadline_, request_deadline_;
  Clock::time_point stop_deadline_ = Clock::time_point::max();  // set when the stream first sees the stop
  size_t head_bytes_ = 0, body_bytes_ = 0;
  bool in_head_ = true;
  uint32_t tail_ = 0;
  bool over_bound_ = false;
};

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

namespace {

// The end of a request head in `bytes`: "\r\n\r\n" or "\n\r\n" (see BoundedStream::read), or npos.
size_t head_end(const std::string& bytes, size_t from) {
  for (size_t i = from < 2 ? 2 : from; i < bytes.size(); ++i) {
    if (bytes[i] == '\n' && bytes[i - 1] == '\r' && bytes[i - 2] == '\n') return i + 1;
  }
  return std::string::npos;
}

// A refusal written without waiting (the socket's buffer takes it), then the connection closed.
void refuse(int fd, int status, const char* reason, const std::string& message) {
  const std::string body = "{\"error\":\"" + message + "\"}";
  const std::string head = "HTTP/1.1 " + std::to_string(status) + " " + reason +
                           "\r\nContent-Type: application/json\r\nConnection: close\r\n" +
                           (status == 503 ? "Retry-After: 1\r\n" : "") +
                           "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n";
  const std::string all = head + body;
  (void)!::send(fd, all.data(), all.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
  ::shutdown(fd, SHUT_RDWR);
  ::close(fd);
}

std::string peer_address(int fd) {
  std::string ip;
  int port = 0;
  address_of(fd, true, ip, port);
  return ip;
}

// httplib's accept loop calls enqueue once per accepted connection: run it at once (it only hands
// the socket to the reactor), so no httplib thread ever holds a connection.
class HandOff : public httplib::TaskQueue {
 public:
  explicit HandOff(BoundedHttpServer::Reactor& reactor) : reactor_(reactor) {}
  void enqueue(std::function<void()> fn) override { fn(); }
  void shutdown() override;

 private:
  BoundedHttpServer::Reactor& reactor_;
};

}  // namespace

// One poller thread holding every connection between requests, and the request threads.
class BoundedHttpServer::Reactor {
 public:
  Reactor(BoundedHttpServer& server, ConnectionLimits limits) : server_(server), limits_(limits) {
    if (limits_.max_queued == 0) limits_.max_queued = 4 * limits_.threads;
    if (::pipe2(wake_, O_CLOEXEC | O_NONBLOCK) != 0) throw std::runtime_error("pipe2 failed");
    poller_ = std::thread([this] { poll_loop(); });
    for (size_t i = 0; i < limits_.threads; ++i) workers_.emplace_back([this] { work_loop(); });
  }
  ~Reactor() {
    stop();
    ::close(wake_[0]);
    ::close(wake_[1]);
  }

  // A new connection from the accept loop: counted against the limits, or refused.
  void accept(int fd) {
    const std::string address = peer_address(fd);
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stopping_) {
        ::close(fd);
        return;
      }
      if (open_ >= limits_.max_connections) {
        ++counters_.refused_full;
      } else if (limits_.max_per_address > 0 && per_address_[address] >= limits_.max_per_address) {
        ++counters_.refused_address;
      } else {
        ++open_;
        ++per_address_[address];
        incoming_.push_back(Waiting{fd, address, "", Clock::now() + kHeadTimeout, server_.keep_alive_max_count_, false});
        wake();
        return;
      }
    }
    refuse(fd, 503, "Service Unavailable", "too many connections; retry later");
  }

  // A connection whose answer is written: wait for its next request here. `started`: the first
  // bytes of that request, already read (a pipelined head not yet complete): its head has
  // kHeadTimeout from now, as a fresh connection's.
  void keep(int fd, std::string address, size_t requests_left, std::string started) {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) {
      release_locked(address);
      ::close(fd);
      return;
    }
    const bool idle = started.empty();
    const auto deadline =
        idle ? Clock::now() + std::chrono::seconds(server_.keep_alive_timeout_sec_) : Clock::now() + kHeadTimeout;
    incoming_.push_back(Waiting{fd, std::move(address), std::move(started), deadline, requests_left, idle});
    wake();
  }

  void release(const std::string& address) {
    std::lock_guard<std::mutex> lock(mu_);
    release_locked(address);
  }

  // Idempotent; every caller returns only once the threads are joined.
  void stop() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stopping_ = true;
      wake();
    }
    work_cv_.notify_all();
    std::lock_guard<std::mutex> joining(join_mu_);
    if (poller_.joinable()) poller_.join();
    for (auto& w : workers_) w.join();
    workers_.clear();
  }

  ConnectionCounters counters() const {
    std::lock_guard<std::mutex> lock(mu_);
    ConnectionCounters c = counters_;
    c.open = open_;
    return c;
  }

 private:
  struct Waiting {
    int fd;
    std::string address;
    std::string head;                 // bytes read so far
    Clock::time_point deadline;       // the head must be complete by then
    size_t requests_left;
    bool idle;                        // between requests: the deadline is the keep-alive timeout
  };
  struct Ready {
    int fd;
    std::string address;
    std::string head;
    size_t requests_left;
    Clock::time_point queued;
  };

  void wake() { (void)!::write(wake_[1], "x", 1); }

  void release_locked(const std::string& address) {
    --open_;
    if (--per_address_[address] == 0) per_address_.erase(address);
  }

  void close_waiting(Waiting& w) {
    ::close(w.fd);
    release(w.address);
  }

  void poll_loop() {
    std::vector<Waiting> waiting;
    std::vector<pollfd> fds;
    for (;;) {
      {
        std::lock_guard<std::mutex> lock(mu_);
        for (auto& w : incoming_) waiting.push_back(std::move(w));
        incoming_.clear();
        if (stopping_) break;
      }
      fds.assign(1, pollfd{wake_[0], POLLIN, 0});
      auto next = Clock::now() + std::chrono::seconds(1);
      for (const auto& w : waiting) {
        fds.push_back(pollfd{w.fd, POLLIN, 0});
        next = std::min(next, w.deadline);
      }
      const auto wait_ms = std::chrono::duration_cast<std::chrono::milliseconds>(next - Clock::now()).count();
      const int n = ::poll(fds.data(), fds.size(), static_cast<int>(std::max<long long>(0, wait_ms) + 1));
      if (n < 0 && errno != EINTR) {  // ENOMEM: say so and try again, rather than leave connections unserved
        std::cerr << "bulwark serve: poll failed (" << std::strerror(errno) << "); retrying\n";
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
      if (fds[0].revents != 0) {
        char sink[256];
        while (::read(wake_[0], sink, sizeof sink) > 0) {
        }
      }
      const auto now = Clock::now();
      std::vector<Waiting> still;
      still.reserve(waiting.size());
      for (size_t i = 0; i < waiting.size(); ++i) {
        Waiting& w = waiting[i];
        if (fds[i + 1].revents != 0) {
          if (!read_head(w)) continue;  // closed or refused
          const size_t end = head_end(w.head, 0);
          if (end != std::string::npos) {
            dispatch(std::move(w));
            continue;
          }
          if (w.idle) {  // the first bytes of a new request: its head has kHeadTimeout from now
            w.idle = false;
            w.deadline = now + kHeadTimeout;
          }
        }
        if (now >= w.deadline) {
          if (!w.idle || !w.head.empty()) {
            std::lock_guard<std::mutex> lock(mu_);
            ++counters_.head_timeouts;
          }
          close_waiting(w);  // an idle keep-alive connection, or a head too slow (slowloris)
          continue;
        }
        still.push_back(std::move(w));
      }
      waiting.swap(still);
    }
    for (auto& w : waiting) close_waiting(w);
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& w : incoming_) {
      ::close(w.fd);
      release_locked(w.address);
    }
    incoming_.clear();
  }

  // Reads what the connection has; false when it is closed (by the peer, an error or a head over
  // kMaxHeadBytes, refused with 431).
  bool read_head(Waiting& w) {
    char buf[8192];
    for (;;) {
      const ssize_t n = ::recv(w.fd, buf, sizeof buf, MSG_DONTWAIT);
      if (n > 0) {
        w.head.append(buf, static_cast<size_t>(n));
        if (head_end(w.head, w.head.size() - static_cast<size_t>(n)) != std::string::npos) return true;
        if (w.head.size() > kMaxHeadBytes) {
          refuse(w.fd, 431, "Request Header Fields Too Large", "request head over 64 KiB");
          release(w.address);
          return false;
        }
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return true;
      close_waiting(w);  // 0: the peer closed; < 0: an error
      return false;
    }
  }

  void dispatch(Waiting w) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (work_.size() < limits_.max_queued && !stopping_) {
        work_.push_back(Ready{w.fd, std::move(w.address), std::move(w.head), w.requests_left, Clock::now()});
        work_cv_.notify_one();
        return;
      }
      ++counters_.refused_queue;
    }
    refuse(w.fd, 503, "Service Unavailable", "the server is busy; retry later");
    release(w.address);
  }

  void work_loop() {
    for (;;) {
      Ready r;
      {
        std::unique_lock<std::mutex> lock(mu_);
        work_cv_.wait(lock, [this] { return stopping_ || !work_.empty(); });
        if (work_.empty()) return;  // stopping
        r = std::move(work_.front());
        work_.pop_front();
        if (Clock::now() - r.queued > kQueueDeadline || stopping_) {
          ++counters_.refused_queue;
          lock.unlock();
          refuse(r.fd, 503, "Service Unavailable", "the server is busy; retry later");
          release(r.address);
          continue;
        }
      }
      server_.serve(r.fd, std::move(r.head), r.requests_left, r.address);
    }
  }

  BoundedHttpServer& server_;
  ConnectionLimits limits_;
  int wake_[2] = {-1, -1};
  mutable std::mutex mu_;
  std::mutex join_mu_;
  std::condition_variable work_cv_;
  bool stopping_ = false;
  std::vector<Waiting> incoming_;
  std::deque<Ready> work_;
  size_t open_ = 0;
  std::map<std::string, size_t> per_address_;
  ConnectionCounters counters_;
  std::thread poller_;
  std::vector<std::thread> workers_;
};

namespace {
void HandOff::shutdown() { reactor_.stop(); }
}  // namespace

BoundedHttpServer::BoundedHttpServer(size_t max_body_bytes, ConnectionLimits limits)
    : max_body_bytes_(max_body_bytes), reactor_(std::make_unique<Reactor>(*this, limits)) {
  new_task_queue = [this] { return new HandOff(*reactor_); };
}

BoundedHttpServer::~BoundedHttpServer() { reactor_->stop(); }

ConnectionCounters BoundedHttpServer::counters() const { return reactor_->counters(); }

bool BoundedHttpServer::process_and_close_socket(socket_t sock) {
  reactor_->accept(sock);
  return true;
}

void BoundedHttpServer::serve(int fd, std::string head, size_t requests_left, const std::string& address) {
  BoundedStream stream(fd, std::move(head), svr_sock_, max_body_bytes_,
                       std::chrono::seconds(read_timeout_sec_) + std::chrono::microseconds(read_timeout_usec_),
                       std::chrono::seconds(write_timeout_sec_) + std::chrono::microseconds(write_timeout_usec_));
  for (; requests_left > 0; --requests_left) {
    stream.begin_request();
    t_close_after_response = false;
    bool connection_closed = false;
    const bool ok = process_request(stream, requests_left == 1, connection_closed, nullptr);
    if (!ok || connection_closed || stream.over_bound() || t_close_after_response || requests_left == 1 ||
        svr_sock_ == INVALID_SOCKET) {
      break;
    }
    // The next request waits in the reactor, not here, unless its whole head is already read
    // (pipelined): a client trickling a second head holds no request thread either.
    std::string next = stream.unread();
    if (head_end(next, 0) == std::string::npos) {
      t_close_after_response = false;
      reactor_->keep(fd, address, requests_left - 1, std::move(next));
      return;
    }
  }
  t_close_after_response = false;
  close_gracefully(fd);
  reactor_->release(address);
}

}  // namespace bulwark::serve
