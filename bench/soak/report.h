// bench/soak/report.h — what a run found (Results), the acceptance criteria judged on it, and
// its report: a table and a PASS/FAIL line per criterion, or JSON.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "drain.h"
#include "metrics.h"
#include "soak.h"

namespace bulwark::soak {

struct Results {
  uint64_t seed = 0;
  std::vector<std::string> server_args;
  double warmup_s = 0, load_s = 0;
  std::map<std::pair<std::string, std::string>, Count> counts;
  std::vector<float> rest_ms, grpc_ms;       // answered valid requests
  std::vector<std::pair<double, long>> rss;  // (s since the load began, KiB), every kRssEveryS after the warm-up
  std::vector<std::pair<double, long>> rss_anon, rss_file;  // its parts, sampled with it
  size_t series_start = 0;
  std::optional<MetricsReport> metrics;  // none: /metrics did not answer
  int swaps = 0;
  DrainReport drain;
};

struct Criterion {
  std::string name;
  bool pass;
  std::string detail;
};

// Adds a client's tally to the results; its latencies to `latency` unless that is null.
void merge(const Tally& t, Results& r, std::vector<float>* latency);
std::vector<Criterion> judge(const Results& r);
void print_report(const Results& r, const std::vector<Criterion>& criteria);
json to_json(const Results& r, const std::vector<Criterion>& criteria);

}  // namespace bulwark::soak
