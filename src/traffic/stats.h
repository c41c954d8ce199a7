// traffic/stats.h — what a traffic run measures, in bounded memory: one aggregate per wall-clock
// second (latencies of that second only, capped) written as one JSON line, and one running total
// per phase (latencies in a fixed log-scale histogram) for the summary.
//
// The JSON line is a contract with the report module; its fields are exactly
// t, time_s, phase, sent, ok, failed, benign_n, benign_correct, attacked_n, attacked_correct,
// flagged, latency_ms_p50, latency_ms_p99, model_version.
//
// Thread-safety: none here; the runner guards every aggregate with its one mutex.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <string>
#include <vector>

namespace bulwark::traffic {

// How one scheduled request ended.
struct Outcome {
  bool sent = false;  // false: its phase ended before a worker was free (backlog)
  bool ok = false;    // a 200 with logits
  bool attacked = false;
  bool correct = false;   // prediction == true label (ok only)
  int64_t flagged = 0;    // rows flagged by the guard, when the server exposes it
  double latency_ms = 0;  // send -> answer of the inference request (ok only)
  double lag_ms = 0;      // how late it was sent against its schedule
  bool feedback_failed = false;
  std::string model_version;
};

// Latencies kept for one second: all of them up to `cap`, then a uniform reservoir sample.
class LatencySample {
 public:
  explicit LatencySample(size_t cap = 10000, uint64_t seed = 0) : cap_(cap), rng_(seed) {}
  void add(double ms);
  // Nearest-rank percentile, q in (0, 1]; NaN when empty.
  double percentile(double q) const;
  int64_t count() const { return seen_; }

 private:
  size_t cap_;
  int64_t seen_ = 0;
  std::vector<double> values_;
  std::mt19937_64 rng_;
};

// Log-scale latency histogram over [1 µs, 1000 s], 100 bins per decade (bin width ~2.3%).
class LatencyHistogram {
 public:
  void add(double ms);
  // The upper edge of the bin holding the nearest-rank percentile; NaN when empty.
  double percentile(double q) const;
  int64_t count() const { return count_; }

 private:
  static constexpr int kBinsPerDecade = 100;
  static constexpr double kMinMs = 1e-3;
  static constexpr int kDecades = 9;
  std::vector<int64_t> bins_ = std::vector<int64_t>(kBinsPerDecade * kDecades + 2, 0);
  int64_t count_ = 0;
};

// Counters shared by the per-second line and the per-phase summary.
struct Counters {
  int64_t sent = 0, ok = 0, failed = 0;
  int64_t benign_n = 0, benign_correct = 0;
  int64_t attacked_n = 0, attacked_correct = 0;
  int64_t flagged = 0;
  int64_t backlog_dropped = 0;  // scheduled but never sent: the phase ended first
  int64_t late = 0;             // sent more than max(10 ms, 1/rate) after their slot
  int64_t feedback_failed = 0;

  void add(const Outcome& o, double late_after_ms);
};

struct SecondStats {
  int64_t claimed = 0;    // slots scheduled in this second that a worker has taken
  int64_t completed = 0;  // of those, finished (answered, failed or dropped)
  Counters counters;
  LatencySample latencies;
  std::string model_version;  // of the last answer completed in this second
};

// One JSON line; model_version is "" when nothing was answered in this second.
nlohmann::json second_line(int64_t t, double time_s, const std::string& phase, const SecondStats& s);

struct PhaseSummary {
  std::string kind;
  double eps_linf = 0;
  std::string attacker_model;
  int64_t seconds = 0;
  int64_t scheduled = 0;  // slots at --rate over the phase
  Counters counters;
  LatencyHistogram latencies;
  double max_lag_ms = 0;
  std::set<std::string> versions;
  std::string first_error;  // the first failure's reason, for the operator
  std::string first_feedback_error;
  double craft_seconds = 0;    // transfer: crafting before the run; square: warm-up
  int64_t square_queries = 0;  // square: images queried by the attacker (rows sent)
  int64_t square_failed_queries = 0;
  int64_t square_crafted = 0;  // square: adversarials finished

  double benign_accuracy() const;    // NaN when none
  double attacked_accuracy() const;  // NaN when none
  nlohmann::json to_json() const;
};

// Numbers as JSON, NaN as null.
nlohmann::json number_or_null(double v);

}  // namespace bulwark::traffic
