// serve/guard.h — the watch on the request path (the detect module, plugged into serve):
//   - each model's per-input detectors, run on its batch thread (detect::DetectorSet: calibrated
//     from the model's calibration file, or the uncalibrated confidence fallback);
//   - the per-client query-similarity detector (Blacklight fingerprints) and its policy:
//     flag, throttle (one request per throttle_interval_s) or block (403 naming the reason);
//   - one stream monitor per model (confidence, detector hit rate, class mix, feedback accuracy),
//     whose alarms and the per-client actions go out as events (detect::EventBus);
//   - the feedback join: request id -> what was answered, bounded in entries and age.
//
// Thread-safety: every method may be called from any request or batch thread.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "detect/calibration.h"
#include "detect/events.h"
#include "detect/monitor.h"
#include "detect/stateful.h"
#include "serve/metrics.h"
#include "serve/types.h"

namespace bulwark::model {
class Model;
}

namespace bulwark::serve {

enum class ExposeScores { kOff, kAdmin, kAll };

struct GuardOptions {
  std::string scorer = "max-softmax";  // uncalibrated fallback: max-softmax, entropy or none
  double threshold = 0.5;              // the fallback's raw flag threshold
  std::map<std::string, std::string> calibration;  // model name -> calibration file (detect calibrate)
  std::vector<std::string> detectors;              // subset of each calibration file; empty = all
  ExposeScores expose = ExposeScores::kAdmin;      // who sees attack_score/attack_flag in responses
  std::string stateful = "off";                    // off | flag | throttle | block
  detect::StatefulOptions stateful_options;
  double throttle_interval_s = 1.0;  // a throttled client gets one request per interval
  bool monitor = true;               // stream monitor for models with a calibration
  detect::MonitorOptions monitor_options;
  std::string events_path;  // JSON-lines event log; empty = none
  int64_t feedback_capacity = 100000;  // request ids remembered for feedback
  double feedback_ttl_s = 3600;        // and for how long

  void validate() const;  // throws invalid_argument naming the flag
};
ExposeScores parse_expose(const std::string& s);  // off | admin | all, errors name --expose-scores

// What a request's rows were answered with, kept for feedback.
struct FeedbackResult {
  int64_t rows = 0, correct = 0;
};

class Guard {
 public:
  Guard(GuardOptions options, Metrics& metrics);

  // The detectors for a model being loaded from `path`: from `calibration` (the registry
  // version's own) when given, else from the --calibration map (checked against the file's
  // SHA-256); nullptr when detection is off. Throws naming the calibration file.
  std::shared_ptr<const detect::DetectorSet> detectors_for(const std::string& name, const model::Model& m,
                                                           const std::string& path,
                                                           const std::string& calibration = "") const;
  // The monitor for a model version about to go live (null when it has no calibrated reference).
  // Slow — thresholds are set by simulation — so it runs before the swap, not after it.
  std::shared_ptr<detect::StreamMonitor> make_monitor(const std::string& name, const std::string& version,
                                                      const detect::DetectorSet* set, int64_t num_classes) const;
  // The version went live: its monitor replaces the old one (requests between the swap and this
  // call still count for the old version's monitor).
  void model_loaded(const std::string& name, std::shared_ptr<detect::StreamMonitor> monitor);
  void model_unloaded(const std::string& name);

  // Before the model runs: throws kPermissionDenied (blocked) or RateLimitedError (throttled).
  void admit(const std::string& client, double now_s);
  // After it ran: stateful observation per row, monitor observations, the feedback record.
  // x [n, ...] as validated (contiguous float), logits [n, K], flagged: n entries, or empty when
  // detection is off. Runs on the request thread, so it reads the tensors' data in plain loops:
  // ATen kernels there enter OpenMP, and gRPC's short-lived threads each started a team (bench/serve
  // measured gRPC at concurrency 8 fall from ~1,100 to ~300 req/s).
  void after_inference(const std::string& model, const std::string& version, const std::string& client,
                       const std::string& request_id, const at::Tensor& x, const at::Tensor& logits,
                       const std::vector<uint8_t>& flagged, double now_s);
  // Labels for an earlier request's rows; throws not_found naming the id when unknown or expired.
  FeedbackResult feedback(const std::string& model, const std::string& id, const std::vector<int64_t>& labels,
                          double now_s);
  bool expose_to(bool admin) const;

  detect::EventBus& events() { return *events_; }
  // Monitor snapshots and stateful stats into /metrics gauges (called on scrape).
  void publish_gauges(double now_s);
  nlohmann::json status(double now_s) const;
  const GuardOptions& options() const { return options_; }
  // Answers are remembered for feedback only while some client can post it (a token with the
  // 'feedback' role; without tokens nobody can): otherwise the table would fill with ids nobody
  // can label. Turning it off forgets what was remembered.
  void set_feedback_possible(bool possible);
  size_t remembered() const;

 private:
  struct Answered {
    std::string model, version;
    std::vector<int64_t> predicted;
    double time_s = 0;
  };
  void remember(const std::string& id, Answered a);

  const GuardOptions options_;
  Metrics& metrics_;
  std::unique_ptr<detect::EventBus> events_;
  std::unique_ptr<detect::StatefulDetector> stateful_;
  mutable std::mutex mu_;  // guards monitors_, answered_, order_, throttle_last_, feedback_possible_
  std::map<std::string, std::shared_ptr<detect::StreamMonitor>> monitors_;  // by model name
  std::unordered_map<std::string, Answered> answered_;
  std::deque<std::pair<double, std::string>> order_;  // (time, id), oldest first, for eviction
  std::map<std::string, double> throttle_last_;       // throttled client -> last admitted time
  bool feedback_possible_ = false;
};

}  // namespace bulwark::serve
