// detect/monitor.h — watches the streams a served model produces (max-softmax confidence, the
// per-input attack detector's verdict, the predicted class, and later labelled feedback) and raises
// an "alarm" Event when one of them shifts away from its clean reference, as it does when an
// attack campaign starts. Each stream has a one-sided CUSUM (Page 1954) whose threshold is set by
// simulation for a target mean time between false alarms (ARL0), so "one false alarm a day" is a
// setting, not a hope. No clock inside: observations carry their time, so a replay of ten hours
// runs in simulated time.
// The clean reference, the options and threshold calibration are in cusum.h, included here.
#pragma once

#include <array>
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "detect/cusum.h"
#include "detect/events.h"

namespace bulwark::detect {

// Thread-safe: observe(), feedback(), tick(), set_version() and snapshot() may be called from any
// thread (one mutex; observe() is O(1)). Events are published after the mutex is released, on the
// calling thread, so a subscriber may call snapshot().
class StreamMonitor {
 public:
  // A plain enum on purpose: the values index the per-detector arrays (Snapshot::detectors).
  enum Detector { kDetectorRate = 0, kConfidence, kClassMix, kAccuracy, kNumDetectors };
  static const char* detector_name(int d);

  StreamMonitor(MonitorOptions options, MonitorReference reference, MonitorThresholds thresholds, EventBus* bus,
                std::string model, std::string version);

  // One answered input. Times may arrive slightly out of order from several batch threads.
  void observe(double time_s, float confidence, bool detector_hit, int64_t predicted_class);
  // A label arrived for an earlier answer.
  void feedback(double time_s, bool correct);
  // Lets alarms clear when traffic stops; observe() and feedback() do the same check.
  void tick(double now_s);
  // The model was swapped: keep the reference and thresholds, restart statistics and windows.
  // Detectors in alarm publish "alarm.cleared" with details.reason = "version_changed".
  void set_version(std::string version);
  std::string version() const;

  struct DetectorState {
    std::string name;
    double statistic = 0, threshold = 0;
    bool in_alarm = false;
    uint64_t alarms = 0, crossings = 0;
    double last_cross_s = -1e300;  // the latest threshold crossing, alarm event or not (cooldown)
  };
  struct Snapshot {
    double time_s = 0, window_s = 0;
    std::string model, version;
    uint64_t window_observations = 0, window_feedback = 0;
    double observation_rate_hz = 0;
    double mean_confidence = 0, detector_hit_rate = 0, accuracy = 0;  // NaN when the window has no data
    std::vector<double> class_shares;                                 // empty window: all 0
    std::array<DetectorState, kNumDetectors> detectors;
    uint64_t alarms_total = 0, observations_total = 0, feedback_total = 0, invalid_observations = 0;
    nlohmann::json to_json() const;
  };
  // Windowed values over (now_s - window_s, now_s], to bucket resolution (window_s / 20).
  Snapshot snapshot(double now_s) const;

  const MonitorOptions& options() const { return options_; }
  const MonitorReference& reference() const { return reference_; }
  const MonitorThresholds& thresholds() const { return thresholds_; }

 private:
  struct Bucket {
    int64_t slot = -1;  // floor(time / bucket_s) it holds; another value means empty/stale
    uint64_t n = 0, hits = 0, feedback = 0, correct = 0, confidence_n = 0;
    double confidence_sum = 0;
    std::vector<uint32_t> classes;
  };
  struct Alarm {
    double statistic = 0, threshold = 0;
    bool in_alarm = false;
    double last_alarm_s = -1e300, last_cross_s = -1e300;
    uint64_t alarms = 0, crossings = 0, episode_crossings = 0;
  };

  Bucket* bucket_for(double time_s);
  // cls: the class that crossed (class mix), else -1.
  void cross(int d, double time_s, double statistic, int64_t cls, std::vector<Event>* out);
  void check_clear(double now_s, std::vector<Event>* out);
  double class_statistic_locked() const;  // max over classes, decayed to now
  Snapshot snapshot_locked(double now_s) const;
  void reset_statistics();
  Event make_event(const char* kind, int d, double time_s, double statistic) const;
  void publish(const std::vector<Event>& events);

  const MonitorOptions options_;
  const MonitorReference reference_;
  const MonitorThresholds thresholds_;
  EventBus* const bus_;
  const std::string model_;
  const double bucket_s_;
  // Per-observation CUSUM increments, precomputed (log-likelihood ratios, standardized drop).
  double hit_up_, hit_down_, conf_k_, err_up_, err_down_;
  std::vector<double> class_up_, class_down_;

  mutable std::mutex mu_;
  std::string version_;
  std::vector<Bucket> buckets_;
  std::array<Alarm, kNumDetectors> alarm_;
  // Class-mix CUSUMs are updated lazily: all K decrease on every observation, but only the observed
  // class can cross, so each keeps its value at the observation count when it was last touched.
  std::vector<double> class_s_;
  std::vector<uint64_t> class_at_;
  uint64_t class_n_ = 0, feedback_since_reset_ = 0;
  uint64_t observations_ = 0, feedback_total_ = 0, invalid_ = 0, alarms_total_ = 0;
  double latest_s_ = 0;
};

}  // namespace bulwark::detect
