// serve/guard.h — the watch on the request path (the detect module, plugged into serve):
//   - each model's per-input detectors, run on its batch thread (detect::DetectorSet: calibrated
//     from the model's calibration file, or the uncalibrated confidence fallback);
//   - the per-client query-similarity detector (Blacklight fingerprints, cell distances) and its policy:
//     flag, throttle (one request per throttle_interval_s) or block (403 naming the reason);
//   - the per-client extraction detector (PRADA distances, the model's unsure answers), with the
//     same policies, checked on each request's answers before they are sent;
//   - one stream monitor per model (confidence, detector hit rate, class mix, feedback accuracy),
//     whose alarms and the per-client actions go out as events (detect::EventBus);
//   - the feedback join: a server-issued random id -> what was answered and by which version,
//     bounded in entries and age; labels count for the version that answered, in a per-version
//     ledger by answer time (what the closed loop's watch reads);
//   - the evidence a traffic alarm needs: which identities' answers were flagged, and how often.
// An identity is a token ("token:ID"), or for a request without one the peer's network prefix
// ("net:198.51.100.0/24"): rotating addresses within a prefix does not make a new client.
//
// Thread-safety: every method may be called from any request or batch thread.
#pragma once

#include <ATen/core/Tensor.h>

#include <array>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "detect/calibration.h"
#include "detect/events.h"
#include "detect/extraction.h"
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
  std::string extraction = "off";  // off | flag | throttle | block (detect/extraction.h)
  detect::ExtractionOptions extraction_options;
  double throttle_interval_s = 1.0;  // a throttled client gets one request per interval
  bool monitor = true;               // stream monitor for models with a calibration
  detect::MonitorOptions monitor_options;
  std::string events_path;  // JSON-lines event log; empty = none
  int64_t feedback_capacity = 100000;  // request ids remembered for feedback
  double feedback_ttl_s = 3600;        // and for how long
  int prefix_v4 = 24;                  // anonymous clients: one identity per IPv4 /prefix_v4 ...
  int prefix_v6 = 64;                  // ... and per IPv6 /prefix_v6
  int64_t ledger_capacity = 100000;    // labelled answers kept per model version (the watch's ledger)

  void validate() const;  // throws invalid_argument naming the flag
};
ExposeScores parse_expose(const std::string& s);  // off | admin | all, errors name --expose-scores

// What a request's rows were answered with, kept for feedback.
struct FeedbackResult {
  int64_t rows = 0, correct = 0;
  std::string version;  // the version that answered them, which the labels count for
};

// Labelled answers of one model version over a span of answer times.
struct LabelCount {
  int64_t labels = 0, correct = 0;
  int64_t labellers = 0;  // distinct feedback tokens among them
  double accuracy() const { return labels > 0 ? static_cast<double>(correct) / static_cast<double>(labels) : -1; }
  nlohmann::json to_json() const;
};

// "net:<address masked to prefix>/<prefix>" for an IPv4 or IPv6 peer ("[::1]:port", "1.2.3.4"), or
// "peer:<text>" for anything that does not parse as an address.
std::string network_identity(const std::string& peer, int prefix_v4, int prefix_v6);

class Guard {
 public:
  Guard(GuardOptions options, Metrics& metrics);

  // The detectors for a model being loaded from `path`: from `calibration` (the registry
  // version's own) when given, else from the --calibration map (checked against the file's
  // SHA-256, `model_sha256`); nullptr when detection is off. Throws naming the calibration file.
  // `calibration_bytes`, when given, is the registry's verified copy of `calibration` (so
  // `calibration` is not empty): read instead of the file.
  std::shared_ptr<const detect::DetectorSet> detectors_for(const std::string& name, const model::Model& m,
                                                           const std::string& model_sha256,
                                                           const std::string& calibration = "",
                                                           const std::string* calibration_bytes = nullptr) const;
  // The monitor for a model version about to go live (null when it has no calibrated reference).
  // Slow — thresholds are set by simulation — so it runs before the swap, not after it.
  std::shared_ptr<detect::StreamMonitor> make_monitor(const std::string& name, const std::string& version,
                                                      const detect::DetectorSet* set, int64_t num_classes) const;
  // The version went live: its monitor replaces the old one (requests between the swap and this
  // call still count for the old version's monitor).
  void model_loaded(const std::string& name, std::shared_ptr<detect::StreamMonitor> monitor);
  void model_unloaded(const std::string& name);

  // Who a request counts as (see above): the token id when authenticated, else the peer's prefix.
  std::string identity(const std::string& token_id, const std::string& peer) const;
  // Before the body is read: throws kPermissionDenied (blocked) or RateLimitedError (throttled).
  void admit(const std::string& client, double now_s);
  // Before the model runs, once the body is decoded: every row of x [n, ...] (contiguous float) is
  // matched against the client's history and stored, as one step under the client's lock, so
  // neither the rows of one request nor concurrent requests slip past the threshold. Throws like
  // admit() when the request makes the client blocked or throttled: none of its rows is answered.
  void check_queries(const std::string& model, const std::string& version, const std::string& client,
                     const at::Tensor& x, double now_s);
  // After the model ran, before the answer is sent: the rows x [n, ...] and what the model answered
  // (logits [n, K]) go to the extraction detector, one step under the client's lock. Throws like
  // admit() when they make the client blocked or throttled: the answer that crossed the threshold
  // is not sent either.
  void check_answers(const std::string& model, const std::string& version, const std::string& client,
                     const at::Tensor& x, const at::Tensor& logits, double now_s);
  // After it ran: monitor observations, the identity's evidence, the feedback record under
  // `feedback_id` (server-issued; never replaces a record). logits [n, K], flagged: n entries, or
  // empty when detection is off. Runs on the request thread, so it reads the tensors' data in plain
  // loops: ATen kernels there enter OpenMP, and gRPC's short-lived threads each started a team
  // (bench/serve measured gRPC at concurrency 8 fall from ~1,100 to ~300 req/s).
  void after_inference(const std::string& model, const std::string& version, const std::string& client,
                       const std::string& feedback_id, const at::Tensor& logits, const std::vector<uint8_t>& flagged,
                       double now_s);
  // Labels for an earlier request's rows, from the feedback token `labeller`. They count for the
  // version that answered (its ledger; the monitor only while that version is served). Throws
  // not_found naming the id when unknown, expired or already labelled.
  FeedbackResult feedback(const std::string& model, const std::string& id, const std::vector<int64_t>& labels,
                          const std::string& labeller, double now_s);
  // The ledger: labelled answers `version` of `model` gave in [from_s, to_s).
  LabelCount labelled(const std::string& model, const std::string& version, double from_s, double to_s) const;
  // The evidence behind a traffic alarm of `statistic`: identities heard from since `since_s` whose
  // rows were anomalous in that statistic's sense at >= min_share of their rows and >= min_rows
  // times (counts decay with the monitor's window as time constant). Anomalous: detector_rate —
  // flagged by the detectors; confidence — flagged, or confidence more than 2 sd below the clean
  // reference's mean; class_mix — predicted into the identity's most frequent class (of 16
  // buckets, class mod 16), with min_share at least 0.5.
  int64_t suspicious_identities(const std::string& model, const std::string& statistic, double since_s,
                                double min_share, double min_rows) const;
  bool feedback_possible() const;
  bool expose_to(bool admin) const;

  detect::EventBus& events() { return *events_; }
  // Monitor snapshots, stateful and extraction stats into /metrics gauges (called on scrape).
  void publish_gauges(double now_s);
  nlohmann::json status(double now_s) const;
  // The stream monitor of the version of `model` now served, as of now_s; nullopt without one.
  std::optional<detect::StreamMonitor::Snapshot> monitor_snapshot(const std::string& model, double now_s) const;
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
  struct Ledger {  // one model version's labelled answers, oldest label first
    struct Row {
      double answered_s;
      bool correct;
      uint16_t labeller;
    };
    std::deque<Row> rows;
    std::vector<std::string> labellers;  // interned; at most 1024 distinct, the rest share the last slot
    double last_s = 0;
  };
  struct Evidence {  // decayed counts of one identity's answered and anomalous rows
    double rows = 0, flagged = 0, low_confidence = 0, time_s = 0;
    std::array<double, 16> classes{};  // predicted class mod 16
  };
  void remember(const std::string& id, Answered a);
  size_t throttle_bound() const;  // throttled clients remembered before stale ones are swept
  void note_evidence(const std::string& model, const std::string& client, const std::vector<int64_t>& pred,
                     const std::vector<float>& conf, const std::vector<uint8_t>& flagged,
                     const detect::StreamMonitor* monitor, double now_s);

  const GuardOptions options_;
  Metrics& metrics_;
  std::unique_ptr<detect::EventBus> events_;
  std::unique_ptr<detect::StatefulDetector> stateful_;
  std::unique_ptr<detect::ExtractionDetector> extraction_;
  mutable std::mutex mu_;  // guards monitors_, answered_, order_, throttle_last_, feedback_possible_
  std::map<std::string, std::shared_ptr<detect::StreamMonitor>> monitors_;  // by model name
  std::unordered_map<std::string, Answered> answered_;
  std::deque<std::pair<double, std::string>> order_;  // (time, id), oldest first, for eviction
  std::map<std::string, double> throttle_last_;       // throttled client -> last admitted time
  bool feedback_possible_ = false;
  std::map<std::pair<std::string, std::string>, Ledger> ledgers_;  // (model, version); guarded by mu_
  std::unordered_map<std::string, Evidence> evidence_;              // model + '\n' + identity; guarded by mu_
};

}  // namespace bulwark::serve
