#include "detect/monitor.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/error.h"

namespace bulwark::detect {
namespace {

using nlohmann::json;
// The per-observation increments are the ones the thresholds were calibrated for (cusum.h).
using detail::bernoulli;
using detail::class_alt;
using detail::detector_alt;
using detail::error_alt;
constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr int kBucketsPerWindow = 20;  // snapshot resolution window_s / 20, memory 20 * (K + 6) words

json num_or_null(double v) { return std::isfinite(v) ? json(v) : json(nullptr); }

}  // namespace

// --- The monitor -------------------------------------------------------------------------------
const char* StreamMonitor::detector_name(int d) {
  static const char* const kNames[] = {"detector_rate", "confidence", "class_mix", "accuracy"};
  return d >= 0 && d < kNumDetectors ? kNames[d] : "unknown";
}

StreamMonitor::StreamMonitor(MonitorOptions options, MonitorReference reference, MonitorThresholds thresholds,
                             EventBus* bus, std::string model, std::string version)
    : options_(std::move(options)),
      reference_(std::move(reference)),
      thresholds_(thresholds),
      bus_(bus),
      model_(std::move(model)),
      bucket_s_(options_.window_s() / kBucketsPerWindow),
      version_(std::move(version)) {
  reference_.validate();
  const double hs[] = {thresholds_.h_detector_rate, thresholds_.h_confidence, thresholds_.h_class_mix,
                       thresholds_.h_accuracy};
  for (int d = 0; d < kNumDetectors; ++d) {
    if (!(hs[d] >= 0))
      throw invalid_argument(std::string("monitor.thresholds.h_") + detector_name(d) + " must be >= 0");
    alarm_[d].threshold = hs[d];
  }
  const Increments hit = bernoulli(reference_.detector_rate, detector_alt(reference_, options_));
  hit_up_ = hit.values[0], hit_down_ = hit.values[1];
  conf_k_ = options_.confidence_shift_sd() / 2;
  err_up_ = err_down_ = 0;
  if (std::isfinite(reference_.accuracy)) {
    const Increments err = bernoulli(1 - reference_.accuracy, error_alt(reference_, options_));
    err_up_ = err.values[0], err_down_ = err.values[1];
  } else {
    alarm_[kAccuracy].threshold = kInf;
  }
  for (double p : reference_.class_frequencies) {
    const Increments c = bernoulli(p, class_alt(p, options_));
    class_up_.push_back(c.values[0]);
    class_down_.push_back(-c.values[1]);
  }
  buckets_.resize(kBucketsPerWindow);
  for (auto& b : buckets_) b.classes.assign(class_up_.size(), 0);
  reset_statistics();
}

StreamMonitor::Bucket* StreamMonitor::bucket_for(double time_s) {
  const auto slot = static_cast<int64_t>(std::floor(time_s / bucket_s_));
  Bucket& b = buckets_[((slot % kBucketsPerWindow) + kBucketsPerWindow) % kBucketsPerWindow];
  if (b.slot > slot) return nullptr;  // older than the window: counts for the CUSUMs only
  if (b.slot < slot) {
    b.slot = slot;
    b.n = b.hits = b.feedback = b.correct = b.confidence_n = 0;
    b.confidence_sum = 0;
    std::fill(b.classes.begin(), b.classes.end(), 0);
  }
  return &b;
}

void StreamMonitor::observe(double time_s, float confidence, bool detector_hit, int64_t predicted_class) {
  std::vector<Event> events;
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++observations_;
    if (!(std::fabs(time_s) < 1e12)) {  // NaN, or so far out that the bucket slot would overflow
      ++invalid_;
      return;
    }
    latest_s_ = std::max(latest_s_, time_s);
    const bool conf_ok = std::isfinite(confidence);
    const bool class_ok = predicted_class >= 0 && predicted_class < static_cast<int64_t>(class_up_.size());
    if (!conf_ok || !class_ok) ++invalid_;
    const double c = conf_ok ? std::clamp(static_cast<double>(confidence), 0.0, 1.0) : 0;
    if (Bucket* b = bucket_for(time_s)) {
      ++b->n;
      b->hits += detector_hit;
      if (conf_ok) ++b->confidence_n, b->confidence_sum += c;
      if (class_ok) ++b->classes[predicted_class];
    }
    Alarm& hit = alarm_[kDetectorRate];
    hit.statistic = std::max(0.0, hit.statistic + (detector_hit ? hit_up_ : hit_down_));
    if (hit.statistic > hit.threshold) cross(kDetectorRate, time_s, hit.statistic, -1, &events);
    if (conf_ok) {
      Alarm& a = alarm_[kConfidence];
      a.statistic = std::max(0.0, a.statistic + (reference_.confidence_mean - c) / reference_.confidence_sd - conf_k_);
      if (a.statistic > a.threshold) cross(kConfidence, time_s, a.statistic, -1, &events);
    }
    if (class_ok) {
      const auto k = static_cast<size_t>(predicted_class);
      ++class_n_;
      const double idle = static_cast<double>(class_n_ - 1 - class_at_[k]);
      class_s_[k] = std::max(0.0, class_s_[k] - idle * class_down_[k]) + class_up_[k];
      class_at_[k] = class_n_;
      if (class_s_[k] > alarm_[kClassMix].threshold) cross(kClassMix, time_s, class_s_[k], predicted_class, &events);
    }
    check_clear(time_s, &events);
  }
  publish(events);
}

void StreamMonitor::feedback(double time_s, bool correct) {
  std::vector<Event> events;
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++feedback_total_;
    if (!(std::fabs(time_s) < 1e12)) {
      ++invalid_;
      return;
    }
    latest_s_ = std::max(latest_s_, time_s);
    ++feedback_since_reset_;
    if (Bucket* b = bucket_for(time_s)) ++b->feedback, b->correct += correct;
    Alarm& a = alarm_[kAccuracy];
    a.statistic = std::max(0.0, a.statistic + (correct ? err_down_ : err_up_));
    if (a.statistic > a.threshold && feedback_since_reset_ >= static_cast<uint64_t>(options_.min_feedback()))
      cross(kAccuracy, time_s, a.statistic, -1, &events);
    check_clear(time_s, &events);
  }
  publish(events);
}

void StreamMonitor::tick(double now_s) {
  std::vector<Event> events;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (std::fabs(now_s) < 1e12) check_clear(now_s, &events);
  }
  publish(events);
}

// Every crossing restarts the statistic (Page's rule), so each crossing is fresh evidence. Only the
// first crossing of an episode, and not within cooldown_s of the last alarm, becomes an event:
// a flapping attacker must not trigger re-training over and over.
void StreamMonitor::cross(int d, double time_s, double statistic, int64_t cls, std::vector<Event>* out) {
  Alarm& a = alarm_[d];
  ++a.crossings;
  a.last_cross_s = std::max(a.last_cross_s, time_s);
  if (d == kClassMix) {
    class_s_[cls] = 0;
  } else {
    a.statistic = 0;
  }
  if (a.in_alarm) {
    ++a.episode_crossings;
    return;
  }
  if (time_s - a.last_alarm_s < options_.cooldown_s()) return;
  a.in_alarm = true;
  a.last_alarm_s = time_s;
  a.episode_crossings = 1;
  ++a.alarms;
  ++alarms_total_;
  Event e = make_event("alarm", d, time_s, statistic);
  if (cls >= 0) {
    const Snapshot s = snapshot_locked(time_s);
    e.details["class"] = cls;
    e.details["window_class_share"] = s.class_shares[cls];
    e.details["reference_class_share"] = reference_.class_frequencies[cls];
  }
  out->push_back(std::move(e));
}

// An episode ends after clear_after_s without a crossing: the CUSUM has drifted back down.
void StreamMonitor::check_clear(double now_s, std::vector<Event>* out) {
  for (int d = 0; d < kNumDetectors; ++d) {
    Alarm& a = alarm_[d];
    if (!a.in_alarm || now_s - a.last_cross_s < options_.clear_after_s()) continue;
    a.in_alarm = false;
    Event e = make_event("alarm.cleared", d, now_s, d == kClassMix ? class_statistic_locked() : a.statistic);
    e.details["alarm_time_s"] = a.last_alarm_s;
    e.details["duration_s"] = now_s - a.last_alarm_s;
    e.details["crossings"] = a.episode_crossings;
    out->push_back(std::move(e));
  }
}

Event StreamMonitor::make_event(const char* kind, int d, double time_s, double statistic) const {
  Event e;
  e.time_s = time_s;
  e.kind = kind;
  e.detector = detector_name(d);
  e.model = model_;
  e.version = version_;
  e.statistic = statistic;
  e.threshold = alarm_[d].threshold;
  e.window_s = options_.window_s();
  const Snapshot s = snapshot_locked(time_s);
  e.details = json{{"window_observations", s.window_observations},
                   {"window_mean_confidence", num_or_null(s.mean_confidence)},
                   {"window_detector_hit_rate", num_or_null(s.detector_hit_rate)},
                   {"window_accuracy", num_or_null(s.accuracy)},
                   {"arl0_hours", thresholds_.arl0_hours}};
  return e;
}

double StreamMonitor::class_statistic_locked() const {
  double best = 0;
  for (size_t k = 0; k < class_s_.size(); ++k)
    best = std::max(best, class_s_[k] - static_cast<double>(class_n_ - class_at_[k]) * class_down_[k]);
  return best;
}

void StreamMonitor::reset_statistics() {
  for (auto& a : alarm_) a.statistic = 0, a.in_alarm = false, a.episode_crossings = 0;
  class_s_.assign(class_up_.size(), 0.0);
  class_at_.assign(class_up_.size(), 0);
  class_n_ = 0;
  feedback_since_reset_ = 0;
  for (auto& b : buckets_) b.slot = std::numeric_limits<int64_t>::min();
}

void StreamMonitor::set_version(std::string version) {
  std::vector<Event> events;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (int d = 0; d < kNumDetectors; ++d) {
      if (!alarm_[d].in_alarm) continue;
      Event e =
          make_event("alarm.cleared", d, latest_s_, d == kClassMix ? class_statistic_locked() : alarm_[d].statistic);
      e.details["reason"] = "version_changed";
      e.details["new_version"] = version;
      events.push_back(std::move(e));
    }
    version_ = std::move(version);
    // Cooldowns survive the swap on purpose: a swap is usually the controller's answer to an
    // alarm, and the same campaign against the new version should not re-trigger it at once.
    reset_statistics();
  }
  publish(events);
}

std::string StreamMonitor::version() const {
  std::lock_guard<std::mutex> lock(mu_);
  return version_;
}

StreamMonitor::Snapshot StreamMonitor::snapshot(double now_s) const {
  std::lock_guard<std::mutex> lock(mu_);
  return snapshot_locked(now_s);
}

StreamMonitor::Snapshot StreamMonitor::snapshot_locked(double now_s) const {
  Snapshot s;
  s.time_s = now_s;
  s.window_s = options_.window_s();
  s.model = model_;
  s.version = version_;
  s.class_shares.assign(class_up_.size(), 0.0);
  const auto now_slot = static_cast<int64_t>(std::floor(now_s / bucket_s_));
  uint64_t hits = 0, correct = 0, conf_n = 0;
  double conf_sum = 0;
  for (const Bucket& b : buckets_) {
    if (b.slot > now_slot || b.slot <= now_slot - kBucketsPerWindow) continue;
    s.window_observations += b.n;
    s.window_feedback += b.feedback;
    hits += b.hits;
    correct += b.correct;
    conf_n += b.confidence_n;
    conf_sum += b.confidence_sum;
    for (size_t k = 0; k < b.classes.size(); ++k) s.class_shares[k] += b.classes[k];
  }
  double classified = 0;
  for (double c : s.class_shares) classified += c;
  if (classified > 0)
    for (double& c : s.class_shares) c /= classified;
  const double n = static_cast<double>(s.window_observations);
  s.mean_confidence = conf_n ? conf_sum / static_cast<double>(conf_n) : kNaN;
  s.detector_hit_rate = n > 0 ? static_cast<double>(hits) / n : kNaN;
  s.accuracy = s.window_feedback ? static_cast<double>(correct) / static_cast<double>(s.window_feedback) : kNaN;
  // The window covers the current, partly elapsed bucket plus the 19 before it.
  const double covered = now_s - static_cast<double>(now_slot - kBucketsPerWindow + 1) * bucket_s_;
  s.observation_rate_hz = covered > 0 ? n / covered : 0;
  for (int d = 0; d < kNumDetectors; ++d) {
    const Alarm& a = alarm_[d];
    s.detectors[d] = DetectorState{detector_name(d), d == kClassMix ? class_statistic_locked() : a.statistic,
                                   a.threshold,      a.in_alarm,
                                   a.alarms,         a.crossings,
                                   a.last_cross_s};
  }
  s.alarms_total = alarms_total_;
  s.observations_total = observations_;
  s.feedback_total = feedback_total_;
  s.invalid_observations = invalid_;
  return s;
}

json StreamMonitor::Snapshot::to_json() const {
  json dets = json::object();
  for (const auto& d : detectors) {
    dets[d.name] = json{{"statistic", d.statistic},
                        {"threshold", num_or_null(d.threshold)},
                        {"in_alarm", d.in_alarm},
                        {"alarms", d.alarms},
                        {"crossings", d.crossings}};
  }
  return json{{"time_s", time_s},
              {"window_s", window_s},
              {"model", model},
              {"version", version},
              {"window_observations", window_observations},
              {"window_feedback", window_feedback},
              {"observation_rate_hz", observation_rate_hz},
              {"mean_confidence", num_or_null(mean_confidence)},
              {"detector_hit_rate", num_or_null(detector_hit_rate)},
              {"accuracy", num_or_null(accuracy)},
              {"class_shares", class_shares},
              {"detectors", dets},
              {"alarms_total", alarms_total},
              {"observations_total", observations_total},
              {"feedback_total", feedback_total},
              {"invalid_observations", invalid_observations}};
}

void StreamMonitor::publish(const std::vector<Event>& events) {
  if (bus_ == nullptr) return;
  for (const auto& e : events) bus_->publish(e);
}

}  // namespace bulwark::detect
