// Slow clients against the REST frontend, as a server process: 200 slowloris connections (request
// heads trickled a byte at a time — half of them after a first, whole request on the connection —
// each from its own loopback address so no per-address limit helps) hold no request thread, so valid requests on new connections keep being answered at once;
// and one address past --max-connections-per-client is answered 503, not queued.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "core/files.h"
#include "server_fixture.h"
#include "server_process.h"

namespace bulwark::testing {
namespace {

using nlohmann::json;

// A connection to 127.0.0.1:port from `source` (any 127.x.y.z is this machine's loopback).
int connect_from(const std::string& source, int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_in local{};
  local.sin_family = AF_INET;
  ::inet_pton(AF_INET, source.c_str(), &local.sin_addr);
  sockaddr_in remote{};
  remote.sin_family = AF_INET;
  remote.sin_port = htons(static_cast<uint16_t>(port));
  ::inet_pton(AF_INET, "127.0.0.1", &remote.sin_addr);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&local), sizeof local) != 0 ||
      ::connect(fd, reinterpret_cast<sockaddr*>(&remote), sizeof remote) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

std::string read_some(int fd) {
  timeval tv{5, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  std::string out;
  char buf[4096];
  for (ssize_t n; (n = ::recv(fd, buf, sizeof buf, 0)) > 0;) out.append(buf, static_cast<size_t>(n));
  return out;
}

struct Started {
  TempDir dir;
  std::string model = write_model(dir, "a.pt", "mlp", 1);
  ServerProcess process;
  int port;
  explicit Started(std::vector<std::string> extra)
      : process(args(model, std::move(extra)), dir.file("stderr.txt")), port(port_of(process)) {}
  static std::vector<std::string> args(const std::string& model, std::vector<std::string> extra) {
    std::vector<std::string> a{"--json", "serve", "--model", "fashion=" + model, "--allow-unsigned", "--http-port", "0",
                               "--grpc-port", "-1", "--access-log", "off"};
    a.insert(a.end(), extra.begin(), extra.end());
    return a;
  }
  static int port_of(ServerProcess& p) {
    const auto line = p.first_line();
    return line.empty() ? -1 : json::parse(line)["http_port"].get<int>();
  }
};

TEST(Slowloris, TwoHundredSlowHeadsHoldNoThreadAndValidRequestsAnswerWithinASecond) {
  Started s({"--threads", "16"});
  ASSERT_GT(s.port, 0) << read_file(s.dir.file("stderr.txt"));
  std::vector<int> slow;
  for (int i = 0; i < 200; ++i) {
    const int fd = connect_from("127.0.1." + std::to_string(i + 1), s.port);
    ASSERT_GE(fd, 0) << "connection " << i;
    // Half trickle their first head; half send one whole request and trickle a pipelined second.
    const std::string first = i % 2 == 0 ? "" : "GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n";
    const std::string start = first + "POST /v2/models/fashion/infer HTTP/1.1\r\nHost: x\r\nX-Slow: ";
    ASSERT_EQ(::send(fd, start.data(), start.size(), MSG_NOSIGNAL), static_cast<ssize_t>(start.size()));
    slow.push_back(fd);
  }
  // The odd connections' whole first requests reach the server as one burst of 100; the measured
  // requests start once each has its answer (a burst over the work queue's bound is answered 503 by
  // design, which the Backpressure tests cover; here it made request 0 a coin flip).
  const auto answered_by = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  for (size_t i = 1; i < slow.size(); i += 2) {
    std::string got;
    while (got.find("\r\n\r\n") == std::string::npos && std::chrono::steady_clock::now() < answered_by) {
      pollfd p{slow[i], POLLIN, 0};
      if (::poll(&p, 1, 100) <= 0) continue;
      char buf[512];
      const ssize_t n = ::recv(slow[i], buf, sizeof buf, 0);
      if (n <= 0) break;
      got.append(buf, static_cast<size_t>(n));
    }
    ASSERT_EQ(got.rfind("HTTP/1.1 ", 0), 0u) << "connection " << i << " had no answer to its whole request";
  }
  std::atomic<bool> stop{false};
  std::thread trickle([&] {  // one more header byte per connection every 200 ms: never a whole head
    while (!stop) {
      for (const int fd : slow) (void)!::send(fd, "a", 1, MSG_NOSIGNAL);
      for (int i = 0; i < 20 && !stop; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  });
  std::vector<double> seconds;
  int ok = 0;
  for (int i = 0; i < 100; ++i) {
    httplib::Client c("127.0.0.1", s.port);  // a new connection each time
    c.set_read_timeout(10, 0);
    const auto t0 = std::chrono::steady_clock::now();
    const auto res = c.Post("/v2/models/fashion/infer", infer_body().dump(), "application/json");
    seconds.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    if (res && res->status == 200) {
      ++ok;
    } else {
      std::cerr << "request " << i << ": " << (res ? "status " + std::to_string(res->status) + " " + res->body
                                                    : "no answer: " + httplib::to_string(res.error())) << "\n";
    }
  }
  stop = true;
  trickle.join();
  std::sort(seconds.begin(), seconds.end());
  const double p50 = seconds[50], p99 = seconds[98];
  std::cerr << "valid requests beside 200 slowloris connections: p50 " << p50 * 1e3 << " ms, p99 " << p99 * 1e3
            << " ms, max " << seconds.back() * 1e3 << " ms\n";
  EXPECT_EQ(ok, 100);
  EXPECT_LT(p99, 1.0);
  for (const int fd : slow) ::close(fd);
}

TEST(Slowloris, ConnectionsPastThePerAddressLimitAreAnswered503) {
  Started s({"--max-connections-per-client", "4"});
  ASSERT_GT(s.port, 0) << read_file(s.dir.file("stderr.txt"));
  std::vector<int> held;
  for (int i = 0; i < 4; ++i) {
    held.push_back(connect_from("127.0.2.1", s.port));
    ASSERT_GE(held.back(), 0);
  }
  const int fifth = connect_from("127.0.2.1", s.port);
  ASSERT_GE(fifth, 0);
  const std::string answer = read_some(fifth);
  EXPECT_EQ(answer.rfind("HTTP/1.1 503", 0), 0u) << answer;
  EXPECT_NE(answer.find("Retry-After: 1"), std::string::npos) << answer;
  EXPECT_NE(answer.find("too many connections"), std::string::npos) << answer;
  ::close(fifth);
  // Another address is not affected, and neither is this one once a connection closes.
  httplib::Client other("127.0.0.1", s.port);
  EXPECT_EQ(other.Post("/v2/models/fashion/infer", infer_body().dump(), "application/json")->status, 200);
  ::close(held.back());
  held.pop_back();
  ASSERT_TRUE(eventually([&] {
    const int fd = connect_from("127.0.2.1", s.port);
    const std::string req = "GET /v2/health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    (void)!::send(fd, req.data(), req.size(), MSG_NOSIGNAL);
    const std::string got = read_some(fd);
    ::close(fd);
    return got.rfind("HTTP/1.1 200", 0) == 0;
  }));
  for (const int fd : held) ::close(fd);
}

}  // namespace
}  // namespace bulwark::testing
