// bench/soak/report.cpp — the soak's verdict and report (report.h): the criteria judged on the
// merged tallies, RSS and drain, the human tables, and the same as JSON.
#include "report.h"

#include <algorithm>
#include <array>
#include <cstdio>

namespace bulwark::soak {
namespace {

const char* to_string(Verdict v) {
  return v == Verdict::kExpected ? "expected" : v == Verdict::kRefused ? "refused (documented)" : "FAILED";
}

double percentile(std::vector<float> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(q * static_cast<double>(v.size())))];
}

bool is_note(const std::string& kind) { return contains(kind, "(longest hold)"); }  // not a request

double rss_window_s(const Results& r) {
  return r.rss.empty() ? 0 : std::min<double>(kRssWindowS, (r.rss.back().first - r.rss.front().first) / 4);
}

// Medians of the samples (r.rss, or one of its parts) in the first and in the last rss_window_s()
// of the measured load.
std::pair<long, long> rss_start_end(const Results& r, const std::vector<std::pair<double, long>>* samples = nullptr) {
  const auto& series = samples ? *samples : r.rss;
  auto median = [&series](double from_s, double to_s) {
    std::vector<long> v;
    for (const auto& [t, kib] : series) {
      if (t >= from_s - 1e-6 && t <= to_s + 1e-6) v.push_back(kib);
    }
    if (v.empty()) return 0L;
    std::nth_element(v.begin(), v.begin() + static_cast<long>(v.size() / 2), v.end());
    return v[v.size() / 2];
  };
  if (series.empty()) return {0, 0};
  const double first = series.front().first, last = series.back().first;
  return {median(first, first + rss_window_s(r)), median(last - rss_window_s(r), last)};
}

std::string one_line(std::string s, size_t n) {
  replace_all(s, "\n", " ");
  replace_all(s, "|", "/");
  return s.substr(0, n);
}

}  // namespace

void merge(const Tally& t, Results& r, std::vector<float>* latency) {
  for (const auto& [key, c] : t.counts) {
    auto& m = r.counts[key];
    if (m.n == 0) m.verdict = c.verdict, m.sample = c.sample;
    m.n += c.n;
  }
  if (latency) latency->insert(latency->end(), t.latency_ms.begin(), t.latency_ms.end());
}

std::vector<Criterion> judge(const Results& r) {
  uint64_t valid = 0, hostile = 0, drained = 0, swaps = 0;
  for (const auto& [key, c] : r.counts) {
    if (c.verdict != Verdict::kFailed || is_note(key.first)) continue;
    const auto& kind = key.first;
    if (kind.rfind("valid/", 0) == 0 || contains(kind, "-pass"))
      valid += c.n;
    else if (kind.rfind("drain/", 0) == 0)
      drained += c.n;
    else if (kind.rfind("swap/", 0) == 0)
      swaps += c.n;
    else
      hostile += c.n;
  }
  const auto [start, end] = rss_start_end(r);
  const double growth = 100.0 * static_cast<double>(end - start) / static_cast<double>(std::max(1L, start));
  const auto& d = r.drain;
  char rss[96], drain[160];
  std::snprintf(rss, sizeof rss, "%.1f -> %.1f MiB, %+.2f %%", start / 1024.0, end / 1024.0, growth);
  std::snprintf(drain, sizeof drain, "exit %s after %.2f s (bound %.0f s), %llu probes dropped or failed",
                d.exit_code ? std::to_string(*d.exit_code).c_str() : "none", d.exit_s, d.bound_s,
                static_cast<unsigned long long>(drained));
  return {
      {"0 failed valid requests", valid == 0,
       std::to_string(valid) + " failed (valid REST/gRPC, and passing inputs to the flaky model)"},
      {"hostile requests get their documented 4xx (flaky: a generic 500)", hostile == 0,
       std::to_string(hostile) + " unexpected answers"},
      {"RSS growth < 5 %", start > 0 && growth < 5.0, rss},
      {"no metric series from unauthenticated or made-up names", r.metrics && r.metrics->offending.empty(),
       r.metrics ? std::to_string(r.metrics->offending.size()) + " offending series" : "/metrics did not answer"},
      {"a hot swap every 5 s, each applied", swaps == 0 && r.swaps > 0,
       std::to_string(r.swaps) + " swaps, " + std::to_string(swaps) + " failed"},
      {"drains cleanly on SIGTERM", d.exit_code == 0 && d.exit_s <= d.bound_s && drained == 0, drain},
  };
}

void print_report(const Results& r, const std::vector<Criterion>& criteria) {
  std::map<std::string, std::array<uint64_t, 3>> by_kind;  // expected, refused, failed
  uint64_t total = 0;
  for (const auto& [key, c] : r.counts) {
    if (is_note(key.first)) continue;
    by_kind[key.first][static_cast<int>(c.verdict)] += c.n;
    total += c.n;
  }
  auto u = [](uint64_t v) { return static_cast<unsigned long long>(v); };
  std::printf(
      "\n| kind | requests | expected | refused 429/503 (documented) | failed / unexpected |\n"
      "| --- | --- | --- | --- | --- |\n");
  for (const auto& [kind, n] : by_kind) {
    std::printf("| %s | %llu | %llu | %llu | %llu |\n", kind.c_str(), u(n[0] + n[1] + n[2]), u(n[0]), u(n[1]), u(n[2]));
  }
  std::printf(
      "\nanswers by kind:\n| kind | result | count | verdict | first detail |\n| --- | --- | --- | --- | --- |\n");
  for (const auto& [key, c] : r.counts) {
    const bool show = c.verdict != Verdict::kExpected || key.first.rfind("slow/", 0) == 0;
    std::printf("| %s | %s | %llu | %s | %s |\n", key.first.c_str(), key.second.c_str(), u(c.n), to_string(c.verdict),
                show ? one_line(c.sample, 120).c_str() : "");
  }
  std::printf(
      "\nvalid requests answered 200/OK over %.0f s:\n| protocol | answered | req/s | p50 ms | p99 ms |\n"
      "| --- | --- | --- | --- | --- |\n",
      r.load_s);
  for (const auto& [name, ms] : {std::pair{"REST", &r.rest_ms}, std::pair{"gRPC", &r.grpc_ms}}) {
    std::printf("| %s | %zu | %.0f | %.2f | %.2f |\n", name, ms->size(), ms->size() / r.load_s, percentile(*ms, 0.5),
                percentile(*ms, 0.99));
  }
  std::printf("\nserver RSS (MiB, s since the load began; sampled every %d s, shown every %d s):", kRssEveryS,
              kProgressEveryS);
  for (size_t i = 0; i < r.rss.size(); ++i) {
    if (i % (kProgressEveryS / kRssEveryS) == 0 || i + 1 == r.rss.size()) {
      std::printf(" %.0f=%.1f", r.rss[i].first, r.rss[i].second / 1024.0);
    }
  }
  const auto [rss_start, rss_end] = rss_start_end(r);
  std::printf(
      "\nRSS start %.1f MiB (median of the first %.0f s after a %.0f s warm-up), end %.1f MiB (median of "
      "the last %.0f s)\n",
      rss_start / 1024.0, rss_window_s(r), r.warmup_s, rss_end / 1024.0, rss_window_s(r));
  const auto anon = rss_start_end(r, &r.rss_anon), file = rss_start_end(r, &r.rss_file);
  std::printf("  of which RssAnon (heap, stacks) %.1f -> %.1f MiB, RssFile (mapped files) %.1f -> %.1f MiB\n",
              anon.first / 1024.0, anon.second / 1024.0, file.first / 1024.0, file.second / 1024.0);
  std::printf("metric series: %zu after the warm-up, %zu at the end (each swap's new version adds series)\n",
              r.series_start, r.metrics ? r.metrics->series : 0);
  const auto& d = r.drain;
  std::printf(
      "drain: SIGTERM -> %s after %.2f s (bound %.0f s); probes in flight at SIGTERM, answered: %d; "
      "last slow connection ended by the server %.2f s after SIGTERM\n",
      d.exit_code ? ("exit " + std::to_string(*d.exit_code)).c_str() : "still running (killed)", d.exit_s, d.bound_s,
      d.in_flight_at_sigterm, d.last_slow_closed_s);
  std::printf("requests: %llu in %.0f s (%.0f/s), seed %llu\n\n", u(total), r.load_s, total / r.load_s, u(r.seed));
  for (const auto& c : criteria)
    std::printf("%s  %s (%s)\n", c.pass ? "PASS" : "FAIL", c.name.c_str(), c.detail.c_str());
  if (r.metrics) {
    for (const auto& l : r.metrics->offending) std::printf("  offending series: %s\n", l.c_str());
  }
}

json to_json(const Results& r, const std::vector<Criterion>& criteria) {
  json kinds = json::array(), rss = json::array(), crit = json::array();
  for (const auto& [key, c] : r.counts) {
    kinds.push_back({{"kind", key.first},
                     {"result", key.second},
                     {"count", c.n},
                     {"verdict", to_string(c.verdict)},
                     {"sample", c.sample}});
  }
  for (const auto& [t, kib] : r.rss) rss.push_back({{"t_s", t}, {"kib", kib}});
  bool pass = true;
  for (const auto& c : criteria) {
    crit.push_back({{"name", c.name}, {"pass", c.pass}, {"detail", c.detail}});
    pass = pass && c.pass;
  }
  auto latency = [](const std::vector<float>& ms) {
    return json{{"answered", ms.size()}, {"p50", percentile(ms, 0.5)}, {"p99", percentile(ms, 0.99)}};
  };
  const auto& d = r.drain;
  return {{"seed", r.seed},
          {"seconds", r.load_s},
          {"server_args", r.server_args},
          {"kinds", kinds},
          {"latency_ms", {{"rest", latency(r.rest_ms)}, {"grpc", latency(r.grpc_ms)}}},
          {"rss_kib",
           {{"warmup_s", r.warmup_s},
            {"window_s", rss_window_s(r)},
            {"start", rss_start_end(r).first},
            {"end", rss_start_end(r).second},
            {"anon_start", rss_start_end(r, &r.rss_anon).first},
            {"anon_end", rss_start_end(r, &r.rss_anon).second},
            {"file_start", rss_start_end(r, &r.rss_file).first},
            {"file_end", rss_start_end(r, &r.rss_file).second},
            {"samples", rss}}},
          {"metrics",
           {{"series_start", r.series_start},
            {"series_end", r.metrics ? r.metrics->series : 0},
            {"offending", r.metrics ? r.metrics->offending : std::vector<std::string>{}}}},
          {"swaps", r.swaps},
          {"drain",
           {{"exit_code", d.exit_code ? json(*d.exit_code) : json(nullptr)},
            {"seconds", d.exit_s},
            {"bound_s", d.bound_s},
            {"in_flight_at_sigterm", d.in_flight_at_sigterm},
            {"last_slow_closed_s", d.last_slow_closed_s}}},
          {"criteria", crit},
          {"pass", pass}};
}

}  // namespace bulwark::soak
