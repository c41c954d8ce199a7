// serve/metrics.h — Prometheus metrics in the text exposition format (version 0.0.4). Written by
// hand: Debian packages no Prometheus client library for C++. Names follow Triton's with a
// `bulwark_` prefix. Thread-safe: every method may be called from any request or batch thread.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <vector>

namespace bulwark::serve {

using Labels = std::vector<std::pair<std::string, std::string>>;

class Metrics {
 public:
  Metrics();

  void request_success(const std::string& model, const std::string& version);
  void request_failure(const std::string& model, const std::string& version, const std::string& reason);
  void request_duration(const std::string& model, const std::string& version, double seconds);
  void queue_duration(const std::string& model, const std::string& version, double seconds);
  void compute_duration(const std::string& model, const std::string& version, double seconds);
  void batch_size(const std::string& model, const std::string& version, int64_t rows);
  void attack_score(const std::string& model, const std::string& version, double score, bool flagged);
  void inflight_add(int delta);
  // The gauge bulwark_model_info{model,version} = 1 for each model being served.
  void set_models(const std::vector<std::pair<std::string, std::string>>& name_version);

  // Families registered in the constructor (detection, monitor, feedback); throws on unknown names.
  void counter(const std::string& name, const Labels& l, double v = 1);
  void gauge(const std::string& name, const Labels& l, double v);

  // The exposition, ready for GET /metrics. Without `internal`, the families that would tell an
  // anonymous scraper one request's hidden verdict (detector scores and flags, stateful hits,
  // monitor statistics and thresholds, alarms, feedback, the loop's state) are left out.
  std::string render(bool internal = true) const;

 private:
  struct Histogram {
    std::vector<double> bounds;
    std::map<Labels, std::vector<uint64_t>> counts;  // per bucket (non-cumulative), + Inf last
    std::map<Labels, double> sums;
  };
  struct Family {
    std::string name, help, type;  // counter | gauge | histogram
    bool internal = false;         // only for the metrics role (render(true))
    std::map<Labels, double> values;
    Histogram hist;
  };
  void add(const std::string& name, const Labels& l, double v);
  void observe(const std::string& name, const Labels& l, double v);

  mutable std::mutex mu_;
  std::map<std::string, Family> families_;
  std::vector<std::string> order_;  // families in registration order
  int64_t inflight_ = 0;
};

// Escapes a label value for the exposition format (backslash, quote, newline; invalid UTF-8 -> U+FFFD).
std::string escape_label_value(const std::string& v);

}  // namespace bulwark::serve
