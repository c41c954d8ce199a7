// bench/soak/slow.cpp — the slow clients (clients.h): raw sockets sending a byte a second or
// nothing at all. After SIGTERM they note when the server ended their connection, for the drain.
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <thread>

#include "clients.h"
#include "requests.h"

namespace bulwark::soak {

// Connects, sends its prefix, then a byte a second (or nothing); records how the connection ended
// and reconnects. The server may close it or answer 4xx; what matters is that valid traffic goes on.
void slow_client(Soak& s, Tally& t, Slow mode) {
  const std::string kind = mode == Slow::kHeaders ? "slow/header-byte-per-s"
                           : mode == Slow::kBody  ? "slow/body-byte-per-s"
                                                  : "slow/idle-connection";
  const std::string prefix = mode == Slow::kHeaders ? "POST /v2/models/good/infer HTTP/1.1\r\nHost: soak\r\nX-Slow: "
                             : mode == Slow::kBody
                                 ? "POST /v2/models/good/infer HTTP/1.1\r\nHost: soak\r\nAuthorization: Bearer " +
                                       s.ws.infer_token +
                                       "\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
                                 : "";
  double longest_s = 0;
  while (!s.stop_slow) {
    const int fd = connect_loopback(s.http_port);
    if (fd < 0) {
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
      continue;
    }
    const auto t0 = Clock::now();
    bool open = send_all(fd, prefix);
    std::string answer;
    while (open && !s.stop_slow) {
      pollfd p{fd, POLLIN, 0};
      if (::poll(&p, 1, 1000) > 0) {
        char buf[4096];
        const auto n = ::recv(fd, buf, sizeof buf, 0);
        if (n <= 0)
          open = false;
        else
          answer.append(buf, static_cast<size_t>(n));
        continue;
      }
      if (mode != Slow::kIdle && !send_all(fd, mode == Slow::kHeaders ? "a" : " ")) open = false;
    }
    ::close(fd);
    const int64_t now_ns = Clock::now().time_since_epoch().count();
    if (!open && s.sigterm_ns != 0) s.slow_closed_after_sigterm_ns = now_ns;
    const double held = since_s(t0);
    longest_s = std::max(longest_s, held);
    const bool answered = answer.rfind("HTTP/1.1 ", 0) == 0;
    const std::string status = answered ? answer.substr(9, 3) : "";
    const std::string result = open ? "held until the end" : answered ? "answered " + status : "closed by the server";
    s.record(t, kind, result, answered && status[0] == '5' ? Verdict::kFailed : Verdict::kExpected,
             "held " + std::to_string(held) + " s");
  }
  s.record(t, kind + " (longest hold)", std::to_string(static_cast<int>(longest_s)) + " s", Verdict::kExpected);
}

}  // namespace bulwark::soak
