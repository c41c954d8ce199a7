// bench/soak — hostile saturation load against a real `bulwark serve` process (the issue's "soak
// and fault tests" item), then SIGTERM with requests in flight.
//   build/bench/soak BULWARK_BINARY MODEL.pt|- [SECONDS=600] [--out results.json] [--seed N] [--keep]
//                    [--server-env NAME=VALUE]...   (for diagnosis, e.g. GLIBC_TUNABLES=glibc.malloc.arena_max=2)
// For SECONDS, concurrently: valid inference over REST (JSON and binary tensors) and gRPC, closed
// loop; invalid, oversized and unauthenticated requests; slow clients dribbling a byte a second or
// holding idle connections; a model that throws on some inputs; a rate-limited token; and a hot
// swap every 5 s (SIGHUP with the model file rewritten, then an admin repository load, in turn).
// Acceptance: 0 failed valid requests (429/503 only where the docs promise them), every hostile
// request answered with its documented 4xx (the throwing model: a 500 naming only the request id),
// server RSS growth < 5 % from the end of the warm-up to the end, no metric series from names that
// unauthenticated or unknown requests chose, every swap applied, and a clean drain: exit 0 within
// --drain-timeout-ms after the longest a request may take (--request-timeout-ms, or the 30 s a
// trickling REST client may take to send one, docs/security.md), no request dropped mid-response.
// Prints a table and a PASS/FAIL line per criterion; exit 0 all pass, 1 one failed, 2 bad usage.
// MODEL `-`: a Fashion-MNIST-shaped zoo `cnn` with random weights. The throwing model is
// TorchScript defined in workspace.cpp from source. Everything random is seeded (--seed, default 1).
// This file: the arguments, the run (clients started, RSS sampled, drain) and the report. The
// clients are in clients.h, one scenario a file; the child server in server.h; the verdict in report.h.
#include <signal.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <functional>
#include <random>
#include <thread>

#include "clients.h"
#include "drain.h"
#include "metrics.h"
#include "report.h"
#include "soak.h"

namespace bulwark::soak {
namespace {

// Runs the load for `seconds` against a started server; samples RSS; stops the load, checks the
// metric labels and drains.
Results run_load(Soak& s, double seconds) {
  Results r;
  r.seed = s.seed;
  r.warmup_s = std::clamp(seconds / 10, 5.0, 60.0);  // allocator arenas, TorchScript profiling, connections
  // 8 + 8 valid; hostile: REST invalid/oversized, REST unauthenticated, gRPC invalid/oversized,
  // gRPC unauthenticated; flaky; rate-limited; swapper; 4 slow.
  constexpr int kRest = 8, kGrpc = 8;
  std::vector<Tally> tallies(kRest + kGrpc + 11);
  std::vector<std::thread> load, slow;
  std::mt19937_64 rng(s.seed);
  size_t k = 0;
  for (int i = 0; i < kRest; ++i) load.emplace_back(valid_rest, std::ref(s), std::ref(tallies[k++]), i);
  for (int i = 0; i < kGrpc; ++i) load.emplace_back(valid_grpc, std::ref(s), std::ref(tallies[k++]), i);
  load.emplace_back(hostile_rest, std::ref(s), std::ref(tallies[k++]), invalid_http_cases(s.ws, rng), false);
  load.emplace_back(hostile_rest, std::ref(s), std::ref(tallies[k++]), unauth_http_cases(s.ws, rng), true);
  for (int i = 0; i < 2; ++i) load.emplace_back(hostile_grpc, std::ref(s), std::ref(tallies[k++]), i);
  load.emplace_back(flaky, std::ref(s), std::ref(tallies[k++]));
  load.emplace_back(rate_limited, std::ref(s), std::ref(tallies[k++]));
  load.emplace_back(swapper, std::ref(s), std::ref(tallies[k++]));
  for (const auto mode : {Slow::kHeaders, Slow::kBody, Slow::kIdle, Slow::kIdle}) {
    slow.emplace_back(slow_client, std::ref(s), std::ref(tallies[k++]), mode);
  }

  const auto t0 = Clock::now();
  auto sample_at = [&](double at_s) {
    std::this_thread::sleep_for(std::chrono::duration<double>(std::max(0.0, at_s - since_s(t0))));
    r.rss.emplace_back(at_s, s.server->rss_kib());
    r.rss_anon.emplace_back(at_s, s.server->status_kib("RssAnon"));
    r.rss_file.emplace_back(at_s, s.server->status_kib("RssFile"));
    if (r.rss.size() % (kProgressEveryS / kRssEveryS) != 1 && at_s < seconds) return;
    std::fprintf(stderr, "[soak %4.0f/%.0f s] requests %llu, failed %llu, swaps %d, server RSS %.1f MiB\n", at_s,
                 seconds, static_cast<unsigned long long>(s.live.requests.load()),
                 static_cast<unsigned long long>(s.live.failed.load()), s.swaps.load(), r.rss.back().second / 1024.0);
  };
  sample_at(r.warmup_s);
  r.series_start = series_now(s);
  for (double at = r.warmup_s + kRssEveryS; at < seconds; at += kRssEveryS) sample_at(at);
  sample_at(seconds);  // the end, still under load like the start
  r.load_s = since_s(t0);
  s.stop_load = true;
  for (auto& t : load) t.join();

  httplib::Client c("127.0.0.1", s.http_port);
  if (const auto m = c.Get("/metrics"); m && m->status == 200) r.metrics = check_metrics(m->body);
  std::vector<Tally> drain_tallies;
  r.drain = drain(s, drain_tallies);
  s.stop_slow = true;
  for (auto& t : slow) t.join();
  r.swaps = s.swaps;
  for (size_t i = 0; i < tallies.size(); ++i) {
    merge(tallies[i], r, i < kRest ? &r.rest_ms : i < kRest + kGrpc ? &r.grpc_ms : nullptr);
  }
  for (const auto& t : drain_tallies) merge(t, r, nullptr);
  return r;
}

struct SoakOptions {
  std::string binary, model;  // the bulwark binary; the good model's file, or "-" for a zoo cnn
  double seconds = 600;
  std::string out;  // results JSON; none when empty
  uint64_t seed = 1;
  bool keep = false;                    // keep the workspace even when every criterion passed
  std::vector<std::string> server_env;  // NAME=VALUE for the server process only
};

int run(const SoakOptions& o) {
  ::signal(SIGPIPE, SIG_IGN);
  Soak s;
  s.seed = o.seed;
  s.ws = make_workspace(o.model, o.seed);
  const auto args = server_args(s.ws);
  ServerProcess server(o.binary, args, s.ws.file("server.stderr"), o.server_env);
  s.server = &server;
  const auto line = server.first_line();
  if (line.empty()) {
    std::fprintf(stderr, "soak: the server did not start; its stderr is in %s\n", s.ws.file("server.stderr").c_str());
    return 1;
  }
  const auto ports = json::parse(line);
  s.http_port = ports["http_port"];
  s.grpc_port = ports["grpc_port"];
  std::printf("soak: %.0f s against %s (pid %d, REST %d, gRPC %d), seed %llu, workspace %s\n", o.seconds,
              o.binary.c_str(), server.pid(), s.http_port, s.grpc_port, static_cast<unsigned long long>(o.seed),
              s.ws.dir.c_str());
  for (const auto& e : o.server_env) std::printf("server environment: %s\n", e.c_str());
  std::fflush(stdout);

  auto r = run_load(s, o.seconds);
  r.server_args = args;
  const auto criteria = judge(r);
  print_report(r, criteria);
  const bool pass = std::all_of(criteria.begin(), criteria.end(), [](const Criterion& c) { return c.pass; });
  if (!o.out.empty()) std::ofstream(o.out) << to_json(r, criteria).dump(2) << '\n';
  if (pass && !o.keep) {
    fs::remove_all(s.ws.dir);
  } else {
    std::printf("workspace kept: %s (server stderr: server.stderr)\n", s.ws.dir.c_str());
  }
  return pass ? 0 : 1;
}

}  // namespace
}  // namespace bulwark::soak

int main(int argc, char** argv) {
  bulwark::soak::SoakOptions o;
  std::vector<std::string> pos;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--out" && i + 1 < argc)
      o.out = argv[++i];
    else if (a == "--seed" && i + 1 < argc)
      o.seed = std::stoull(argv[++i]);
    else if (a == "--server-env" && i + 1 < argc)
      o.server_env.push_back(argv[++i]);
    else if (a == "--keep")
      o.keep = true;
    else
      pos.push_back(a);
  }
  if (pos.size() > 2) o.seconds = std::atof(pos[2].c_str());
  const bool env_ok = std::all_of(o.server_env.begin(), o.server_env.end(),
                                  [](const std::string& e) { return e.find('=') != std::string::npos; });
  if (pos.size() < 2 || pos.size() > 3 || !(o.seconds >= 10) || !env_ok) {
    std::fprintf(stderr,
                 "usage: soak BULWARK_BINARY MODEL.pt|- [SECONDS>=10, default 600] [--out results.json] "
                 "[--seed N] [--keep] [--server-env NAME=VALUE]...\n");
    return 2;
  }
  o.binary = pos[0];
  o.model = pos[1];
  try {
    return bulwark::soak::run(o);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "soak: %s\n", e.what());
    return 1;
  }
}
