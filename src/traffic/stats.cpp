#include "traffic/stats.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace bulwark::traffic {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

double ratio(int64_t num, int64_t den) { return den > 0 ? static_cast<double>(num) / static_cast<double>(den) : kNaN; }

int64_t nearest_rank(double q, int64_t n) {
  const auto r = static_cast<int64_t>(std::ceil(q * static_cast<double>(n)));
  return std::clamp<int64_t>(r, 1, n) - 1;
}

}  // namespace

void LatencySample::add(double ms) {
  ++seen_;
  if (values_.size() < cap_) {
    values_.push_back(ms);
    return;
  }
  std::uniform_int_distribution<int64_t> pick(0, seen_ - 1);
  const int64_t k = pick(rng_);
  if (k < static_cast<int64_t>(cap_)) values_[static_cast<size_t>(k)] = ms;
}

double LatencySample::percentile(double q) const {
  if (values_.empty()) return kNaN;
  std::vector<double> v = values_;
  const auto k = nearest_rank(q, static_cast<int64_t>(v.size()));
  std::nth_element(v.begin(), v.begin() + k, v.end());
  return v[static_cast<size_t>(k)];
}

void LatencyHistogram::add(double ms) {
  int bin = 0;  // bin 0: below kMinMs; the last bin: above the top
  if (ms >= kMinMs) {
    bin = 1 + static_cast<int>(std::floor(std::log10(ms / kMinMs) * kBinsPerDecade));
    bin = std::min(bin, static_cast<int>(bins_.size()) - 1);
  }
  ++bins_[static_cast<size_t>(bin)];
  ++count_;
}

double LatencyHistogram::percentile(double q) const {
  if (count_ == 0) return kNaN;
  const int64_t want = nearest_rank(q, count_) + 1;
  int64_t seen = 0;
  for (size_t b = 0; b < bins_.size(); ++b) {
    seen += bins_[b];
    if (seen >= want) return kMinMs * std::pow(10.0, static_cast<double>(b) / kBinsPerDecade);
  }
  return kNaN;
}

void Counters::add(const Outcome& o, double late_after_ms) {
  if (!o.sent) {
    ++backlog_dropped;
    return;
  }
  ++sent;
  if (o.lag_ms > late_after_ms) ++late;
  if (!o.ok) {
    ++failed;
    return;
  }
  ++ok;
  flagged += o.flagged;
  feedback_failed += o.feedback_failed ? 1 : 0;
  if (o.attacked) {
    ++attacked_n;
    attacked_correct += o.correct ? 1 : 0;
  } else {
    ++benign_n;
    benign_correct += o.correct ? 1 : 0;
  }
}

nlohmann::json number_or_null(double v) { return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr); }

nlohmann::json second_line(int64_t t, double time_s, const std::string& phase, const SecondStats& s) {
  const auto& c = s.counters;
  return {{"t", t},
          {"time_s", time_s},
          {"phase", phase},
          {"sent", c.sent},
          {"ok", c.ok},
          {"failed", c.failed},
          {"benign_n", c.benign_n},
          {"benign_correct", c.benign_correct},
          {"attacked_n", c.attacked_n},
          {"attacked_correct", c.attacked_correct},
          {"flagged", c.flagged},
          {"latency_ms_p50", number_or_null(s.latencies.percentile(0.5))},
          {"latency_ms_p99", number_or_null(s.latencies.percentile(0.99))},
          {"model_version", s.model_version}};
}

double PhaseSummary::benign_accuracy() const { return ratio(counters.benign_correct, counters.benign_n); }
double PhaseSummary::attacked_accuracy() const { return ratio(counters.attacked_correct, counters.attacked_n); }

nlohmann::json PhaseSummary::to_json() const {
  const auto& c = counters;
  nlohmann::json j = {{"phase", kind},
                      {"seconds", seconds},
                      {"scheduled", scheduled},
                      {"sent", c.sent},
                      {"ok", c.ok},
                      {"failed", c.failed},
                      {"benign_n", c.benign_n},
                      {"benign_correct", c.benign_correct},
                      {"benign_accuracy", number_or_null(benign_accuracy())},
                      {"attacked_n", c.attacked_n},
                      {"attacked_correct", c.attacked_correct},
                      {"attacked_accuracy", number_or_null(attacked_accuracy())},
                      {"flagged", c.flagged},
                      {"backlog_dropped", c.backlog_dropped},
                      {"late", c.late},
                      {"max_lag_ms", max_lag_ms},
                      {"feedback_failed", c.feedback_failed},
                      {"latency_ms_p50", number_or_null(latencies.percentile(0.5))},
                      {"latency_ms_p99", number_or_null(latencies.percentile(0.99))},
                      {"versions", std::vector<std::string>(versions.begin(), versions.end())}};
  if (kind != "benign") j["eps_linf"] = eps_linf;
  if (!attacker_model.empty()) j["attacker_model"] = attacker_model;
  if (kind != "benign") j["craft_seconds"] = craft_seconds;
  if (kind == "square") {
    j["square_queries"] = square_queries;
    j["square_failed_queries"] = square_failed_queries;
    j["square_crafted"] = square_crafted;
  }
  if (!first_error.empty()) j["first_error"] = first_error;
  if (!first_feedback_error.empty()) j["first_feedback_error"] = first_feedback_error;
  return j;
}

}  // namespace bulwark::traffic
