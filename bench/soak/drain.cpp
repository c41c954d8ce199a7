// bench/soak/drain.cpp — SIGTERM under load (drain.h): REST and gRPC probes stream in across the
// signal; each must be answered in full or refused before admission, never cut off mid-response,
// and the server must exit 0 within its bound.
#include "drain.h"

#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <random>
#include <thread>

#include "requests.h"

namespace bulwark::soak {
namespace {

// A request on a fresh connection, answered in full, refused (503, connection refused, or
// reset before a byte came back: never admitted), or cut off mid-response (a failure).
std::string drain_probe_rest(int port, const std::string& request, Verdict& v) {
  const int fd = connect_loopback(port);
  if (fd < 0) {
    v = errno == ECONNREFUSED ? Verdict::kRefused : Verdict::kFailed;
    return "connect: " + std::string(std::strerror(errno));
  }
  const bool sent = send_all(fd, request);
  std::string answer;
  char buf[16384];
  for (;;) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 30000) <= 0) break;
    const auto n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    answer.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  v = Verdict::kFailed;
  if (answer.empty()) {
    v = Verdict::kRefused;
    return sent ? "closed before a byte of answer" : "reset while sending, no answer";
  }
  const auto head_end = answer.find("\r\n\r\n");
  const auto cl = answer.find("Content-Length: ");
  if (answer.rfind("HTTP/1.1 ", 0) != 0 || head_end == std::string::npos || cl == std::string::npos) {
    return "cut off mid-response";
  }
  const size_t length = std::stoul(answer.substr(cl + 16));
  if (answer.size() - head_end - 4 < length) return "cut off mid-response";
  const auto status = answer.substr(9, 3);
  if (status == "200") v = Verdict::kExpected;
  if (status == "503") v = Verdict::kRefused;
  return status;
}

}  // namespace

// SIGTERM while 8-row requests stream in on 4 REST and 4 gRPC clients (64 rows: they fit the
// queue, so most are admitted); the slow clients stay connected.
DrainReport drain(Soak& s, std::vector<Tally>& tallies) {
  constexpr int kRows = kMaxQueue / 8;
  std::mt19937_64 rng(s.seed * 1000 + 500);
  const auto values = image_values(kRows, rng);
  const auto body = json_body(values, kRows);
  const std::string request = "POST /v2/models/good/infer HTTP/1.1\r\nHost: soak\r\nAuthorization: Bearer " +
                              s.ws.infer_token + "\r\nContent-Type: application/json\r\nConnection: close\r\n" +
                              "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
  const auto grpc_q = grpc_request("good", values, kRows);
  std::atomic<bool> gone{false};
  auto& sigterm_ns = s.sigterm_ns;
  std::atomic<int> in_flight{0};
  auto ns_now = [] { return Clock::now().time_since_epoch().count(); };
  auto note = [&](int64_t started) {
    const auto t = sigterm_ns.load();
    if (t != 0 && started < t) ++in_flight;
  };
  std::vector<std::thread> probes;
  tallies.resize(8);
  for (int i = 0; i < 8; ++i) {
    probes.emplace_back([&, i] {
      auto& t = tallies[static_cast<size_t>(i)];
      auto stub = s.grpc();
      while (!gone) {
        const auto started = ns_now();
        Verdict v;
        if (i < 4) {
          const auto result = drain_probe_rest(s.http_port, request, v);
          s.record(t, "drain/rest", result, v);
          if (result.rfind("connect", 0) == 0) break;  // the listener is closed: nothing more to see
        } else {
          grpc::ClientContext ctx;
          set_call(ctx, s.ws.infer_token);
          inference::ModelInferResponse r;
          const auto st = stub->ModelInfer(&ctx, grpc_q, &r);
          // CANCELLED on a call sent after SIGTERM: gRPC's shutdown refusing it before any handler
          // ran (not the documented UNAVAILABLE, but nothing was cut off); before SIGTERM: dropped.
          std::string result = code_name(st.error_code());
          v = st.ok()                                ? Verdict::kExpected
              : st.error_code() == grpc::UNAVAILABLE ? Verdict::kRefused
                                                     : Verdict::kFailed;
          if (st.error_code() == grpc::CANCELLED) {
            const bool after = sigterm_ns != 0 && started >= sigterm_ns;
            result += after ? " (sent after SIGTERM)" : " (sent before SIGTERM)";
            if (after) v = Verdict::kRefused;
          }
          s.record(t, "drain/grpc", result, v, st.error_message());
          if (!st.ok() && sigterm_ns != 0) std::this_thread::sleep_for(std::chrono::milliseconds(20));
        }
        if (v != Verdict::kRefused) note(started);
      }
    });
  }
  std::this_thread::sleep_for(std::chrono::seconds(1));
  DrainReport d;
  d.bound_s = std::max(kHttpReadBoundS, kRequestTimeoutMs / 1000) + kDrainTimeoutMs / 1000.0 + 2;
  const auto t0 = Clock::now();
  sigterm_ns = ns_now();
  s.server->signal(SIGTERM);
  d.exit_code = s.server->wait_exit(d.bound_s);
  d.exit_s = since_s(t0);
  if (!d.exit_code) d.exit_code = s.server->wait_exit(60);  // report how long it really took, up to a minute
  d.exit_s = since_s(t0);
  gone = true;
  for (auto& p : probes) p.join();
  if (s.slow_closed_after_sigterm_ns != 0) d.last_slow_closed_s = (s.slow_closed_after_sigterm_ns - sigterm_ns) / 1e9;
  d.in_flight_at_sigterm = in_flight;
  return d;
}

}  // namespace bulwark::soak
