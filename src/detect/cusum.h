// detect/cusum.h — the calibration half of the stream monitor (monitor.h): the clean reference
// each stream is compared with (MonitorReference, fitted from clean traffic), the one-sided CUSUM's
// false-alarm rate estimated by simulation (cusum_arl, cusum_threshold), and the thresholds that
// give the whole monitor a target mean time between false alarms (calibrate_thresholds).
// MonitorOptions lives here rather than in monitor.h: most of its settings (ARL0, traffic rates,
// the shifts each CUSUM is tuned to) are calibration inputs, and with it here monitor.h builds on
// this header without this header, or cusum.cpp, reaching back up to the running monitor.
// Callers include detect/monitor.h, which includes this file.
#pragma once

#include <cstdint>
#include <limits>
#include <vector>

#include <nlohmann/json.hpp>

namespace bulwark::detect {

// MonitorOptions().window_s(10).arl0_hours(24). Setters validate and throw invalid_argument naming
// the config key; the monitor keeps a copy, immutable once built.
class MonitorOptions {
 public:
  MonitorOptions& window_s(double v);          // sliding window behind snapshot(), (0, 3600]
  MonitorOptions& arl0_hours(double v);        // mean time between false alarms of the whole monitor
  MonitorOptions& expected_rate_hz(double v);  // answered inputs per second, turns hours into observations
  MonitorOptions& feedback_rate_hz(double v);  // labelled feedback per second, same for the accuracy CUSUM
  MonitorOptions& cooldown_s(double v);        // least time between two "alarm" events of one detector
  MonitorOptions& clear_after_s(double v);     // quiet time (no threshold crossing) before "alarm.cleared"
  MonitorOptions& min_feedback(int64_t v);     // labels needed since the last reset before "accuracy" may alarm
  // The shifts each CUSUM is tuned to detect fastest (smaller shifts are still found, later):
  MonitorOptions& detector_rate_ratio(double v);  // hit rate p1 = max(ratio * p0, detector_rate_min) ...
  MonitorOptions& detector_rate_min(double v);    // ... capped at (1 + p0) / 2
  MonitorOptions& confidence_shift_sd(double v);  // mean confidence drop, in reference standard deviations
  MonitorOptions& class_share_shift(double v);    // one class's share p -> p + shift * (1 - p)
  MonitorOptions& accuracy_drop(double v);        // accuracy a -> a * (1 - drop)

  double window_s() const { return window_s_; }
  double arl0_hours() const { return arl0_hours_; }
  double expected_rate_hz() const { return expected_rate_hz_; }
  double feedback_rate_hz() const { return feedback_rate_hz_; }
  double cooldown_s() const { return cooldown_s_; }
  double clear_after_s() const { return clear_after_s_; }
  int64_t min_feedback() const { return min_feedback_; }
  double detector_rate_ratio() const { return detector_rate_ratio_; }
  double detector_rate_min() const { return detector_rate_min_; }
  double confidence_shift_sd() const { return confidence_shift_sd_; }
  double class_share_shift() const { return class_share_shift_; }
  double accuracy_drop() const { return accuracy_drop_; }

  nlohmann::json to_json() const;

 private:
  double window_s_ = 10;
  double arl0_hours_ = 24;  // a false alarm can start re-training: one a day, not one an hour
  double expected_rate_hz_ = 50;
  double feedback_rate_hz_ = 1;
  double cooldown_s_ = 30;
  double clear_after_s_ = 30;
  int64_t min_feedback_ = 20;
  double detector_rate_ratio_ = 5;
  double detector_rate_min_ = 0.2;
  double confidence_shift_sd_ = 1;
  double class_share_shift_ = 0.1;
  double accuracy_drop_ = 0.2;
};

// The clean profile, fitted once from clean traffic (the calibration split) and stored with the
// model's calibration file.
struct MonitorReference {
  double detector_rate = 0.01;  // p0: the detector's false-positive rate on clean inputs
  double confidence_mean = 0.9, confidence_sd = 0.1;
  // Equal-probability atoms for clean confidence: the means of (at most) 256 equal-mass slices of
  // the sorted sample. A compact bootstrap sample: max-softmax confidence is bounded and skewed,
  // and a normal model of it would misplace the confidence threshold.
  std::vector<double> confidence_atoms;
  std::vector<double> class_frequencies;                       // K entries, all > 0 (smoothed), summing to 1
  double accuracy = std::numeric_limits<double>::quiet_NaN();  // NaN: unknown, accuracy CUSUM off
  int64_t samples = 0;

  // correct may be empty (no labels: accuracy stays NaN); otherwise all vectors have one entry per
  // clean input. Rates are smoothed ((count + 0.5) / (n + 1)) so no class or rate is exactly 0.
  // Callers that know the detector's calibrated FPR may overwrite detector_rate afterwards.
  static MonitorReference fit(const std::vector<float>& confidences, const std::vector<bool>& detector_hits,
                              const std::vector<int64_t>& predicted_classes, int64_t num_classes,
                              const std::vector<bool>& correct = {});
  int64_t num_classes() const { return static_cast<int64_t>(class_frequencies.size()); }
  void validate() const;  // data_format naming the field
  nlohmann::json to_json() const;
  static MonitorReference from_json(const nlohmann::json& j);
};

struct MonitorThresholds {
  double h_detector_rate = 0, h_confidence = 0, h_class_mix = 0, h_accuracy = 0;  // inf: detector off
  double arl0_hours = 0;  // provenance: what they were calibrated for, and with which seed
  uint64_t seed = 0;
  nlohmann::json to_json() const;
  static MonitorThresholds from_json(const nlohmann::json& j);
};

// A CUSUM S_n = max(0, S_{n-1} + X_n) with i.i.d. increments X taking values[i] w.p. probs[i].
struct Increments {
  std::vector<double> values, probs;
};

// Mean number of observations from S = 0 until S > h. Estimated by regenerative simulation: the
// walk is cut into excursions from 0; ARL = E[excursion length] / P(an excursion passes h)
// (Wald's identity), and the rare passage probability is simulated under the exponentially tilted
// law (Siegmund 1976), where passing h is the common case and each path is weighted by exp(-theta S).
// That costs thousands of short paths instead of millions of steps per false alarm. Seeded; the
// same seed reuses the same random numbers for every h, so the estimate is monotone enough to bisect.
double cusum_arl(const Increments& inc, double h, uint64_t seed, int excursions = 4096);
// The smallest h (to 0.01 / theta, i.e. ARL to ~1 %) whose estimated ARL reaches arl. A Bernoulli
// CUSUM is discrete and its ARL a step function of h: this lands just above a step, on the safe side.
double cusum_threshold(const Increments& inc, double arl, uint64_t seed);

// Thresholds for reference traffic under options: the monitor's ARL0 is split evenly over its
// active detectors (false-alarm rates add), each converted to its own stream's observations.
// About 0.15 s (10 or 1000 classes, ARL0 1 h at 50/s).
MonitorThresholds calibrate_thresholds(const MonitorReference& reference, const MonitorOptions& options, uint64_t seed);

namespace detail {
// Shared with monitor.cpp: the running monitor must add exactly the increments its thresholds were
// calibrated for. bernoulli(p0, p1): the log-likelihood-ratio increments of a Bernoulli stream
// (hit, miss) tuned to detect p0 -> p1; the *_alt functions give p1 for each stream under options.
Increments bernoulli(double p0, double p1);
double detector_alt(const MonitorReference& r, const MonitorOptions& o);  // detector hit rate
double error_alt(const MonitorReference& r, const MonitorOptions& o);     // error rate, 1 - accuracy
double class_alt(double p0, const MonitorOptions& o);                     // one class's share
}  // namespace detail

}  // namespace bulwark::detect
