#include "serve/guard.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>

#include "core/digest.h"
#include "core/error.h"
#include "model/model.h"
#include "serve/auth.h"

namespace bulwark::serve {
namespace {

constexpr size_t kMaxFeedbackIdBytes = 256;

std::string seconds_text(double s) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.0f", std::ceil(std::max(0.0, s)));
  return buf;
}

}  // namespace

ExposeScores parse_expose(const std::string& s) {
  if (s == "off") return ExposeScores::kOff;
  if (s == "admin") return ExposeScores::kAdmin;
  if (s == "all") return ExposeScores::kAll;
  throw invalid_argument("--expose-scores must be off, admin or all, got '" + s + "'");
}

void GuardOptions::validate() const {
  if (scorer != "max-softmax" && scorer != "entropy" && scorer != "none") {
    throw invalid_argument("--guard: unknown scorer '" + scorer + "' (known: max-softmax, entropy, none)");
  }
  if (!(threshold >= 0 && threshold <= 1)) throw invalid_argument("--guard-threshold must be in [0, 1]");
  if (stateful != "off") detect::parse_policy(stateful);
  if (!(throttle_interval_s > 0 && throttle_interval_s <= 3600)) {
    throw invalid_argument("--throttle-interval-s must be in (0, 3600]");
  }
  if (feedback_capacity < 1 || feedback_capacity > 10000000) {
    throw invalid_argument("--feedback-capacity must be in 1..10000000");
  }
  if (!(feedback_ttl_s > 0 && feedback_ttl_s <= 7 * 86400)) throw invalid_argument("--feedback-ttl-s must be in (0, 604800]");
  for (const auto& [name, file] : calibration) {
    if (name.empty() || file.empty()) throw invalid_argument("--calibration needs NAME=FILE");
  }
}

Guard::Guard(GuardOptions options, Metrics& metrics) : options_(std::move(options)), metrics_(metrics) {
  options_.validate();
  events_ = std::make_unique<detect::EventBus>(options_.events_path);
  if (options_.stateful != "off") {
    auto so = options_.stateful_options;
    so.policy(detect::parse_policy(options_.stateful));
    stateful_ = std::make_unique<detect::StatefulDetector>(so);
  }
  events_->subscribe([this](const detect::Event& e) {
    if (e.kind == "alarm") metrics_.counter("bulwark_alarms_total", {{"model", e.model}, {"detector", e.detector}});
  });
}

std::shared_ptr<const detect::DetectorSet> Guard::detectors_for(const std::string& name, const model::Model& m,
                                                                const std::string& path,
                                                                const std::string& calibration) const {
  const auto it = options_.calibration.find(name);
  const std::string file = !calibration.empty() ? calibration : it != options_.calibration.end() ? it->second : "";
  if (!file.empty()) {
    auto set = detect::DetectorSet::load(file, m, sha256_file_hex(path));
    if (!options_.detectors.empty()) set = set.select(options_.detectors);
    return std::make_shared<const detect::DetectorSet>(std::move(set));
  }
  if (options_.scorer == "none") return nullptr;
  return std::make_shared<const detect::DetectorSet>(
      detect::DetectorSet::uncalibrated(detect::make_detector(options_.scorer, 0, 1, {}), options_.threshold));
}

std::shared_ptr<detect::StreamMonitor> Guard::make_monitor(const std::string& name, const std::string& version,
                                                           const detect::DetectorSet* set, int64_t num_classes) const {
  std::shared_ptr<detect::StreamMonitor> monitor;
  if (options_.monitor && set && set->calibrated() && !set->monitor_reference().empty()) {
    auto ref = detect::MonitorReference::from_json(set->monitor_reference());
    if (ref.num_classes() == num_classes) {
      const auto thresholds = detect::calibrate_thresholds(ref, options_.monitor_options, /*seed=*/0);
      monitor = std::make_shared<detect::StreamMonitor>(options_.monitor_options, ref, thresholds, events_.get(), name,
                                                        version);
    }
  }
  return monitor;
}

void Guard::model_loaded(const std::string& name, std::shared_ptr<detect::StreamMonitor> monitor) {
  std::lock_guard<std::mutex> lock(mu_);
  if (monitor) monitors_[name] = std::move(monitor);
  else monitors_.erase(name);
}

void Guard::model_unloaded(const std::string& name) {
  std::lock_guard<std::mutex> lock(mu_);
  monitors_.erase(name);
}

void Guard::admit(const std::string& client, double now_s) {
  if (!stateful_) return;
  const auto st = stateful_->state(client, now_s);
  if (st.blocked) {
    metrics_.counter("bulwark_stateful_refused_total", {{"policy", "block"}});
    throw Error(ErrorKind::kPermissionDenied, "client blocked for another " + seconds_text(st.until_s - now_s) +
                                                  " s: " + st.reason);
  }
  if (!st.throttled) return;
  std::lock_guard<std::mutex> lock(mu_);
  auto [it, fresh] = throttle_last_.emplace(client, now_s);
  if (!fresh) {
    const double wait = options_.throttle_interval_s - (now_s - it->second);
    if (wait > 0) {
      metrics_.counter("bulwark_stateful_refused_total", {{"policy", "throttle"}});
      throw RateLimitedError("client throttled to 1 request per " + seconds_text(options_.throttle_interval_s) +
                                 " s: " + st.reason,
                             wait);
    }
    it->second = now_s;
  }
  // Bounded: only throttled clients are here, and stale entries go once the table is large.
  if (throttle_last_.size() > static_cast<size_t>(options_.stateful_options.max_clients())) {
    for (auto i = throttle_last_.begin(); i != throttle_last_.end();) {
      i = now_s - i->second > options_.throttle_interval_s ? throttle_last_.erase(i) : std::next(i);
    }
  }
}

void Guard::after_inference(const std::string& model, const std::string& version, const std::string& client,
                            const std::string& request_id, const at::Tensor& x, const at::Tensor& logits,
                            const std::vector<uint8_t>& flagged, double now_s) {
  const int64_t n = logits.size(0);
  if (stateful_) {
    const auto flat = x.contiguous().to(torch::kFloat);  // already so: no copy
    const int64_t d = flat.numel() / std::max<int64_t>(1, n);
    const float* p = flat.data_ptr<float>();
    for (int64_t i = 0; i < n; ++i) {
      const auto v = stateful_->observe(client, p + i * d, d, now_s);
      if (v.hit) metrics_.counter("bulwark_stateful_hits_total", {{"model", model}});
      if (!v.newly_flagged) continue;
      const auto policy = detect::to_string(stateful_->options().policy());
      metrics_.counter("bulwark_stateful_flagged_total", {{"policy", policy}});
      detect::Event e;
      e.time_s = now_s;
      e.kind = v.blocked ? "client.blocked" : v.throttled ? "client.throttled" : "client.flagged";
      e.detector = "stateful";
      e.model = model;
      e.version = version;
      e.subject = client;
      e.statistic = static_cast<double>(v.client_hits);
      e.threshold = stateful_->options().hits_to_flag();
      e.window_s = stateful_->options().flag_window_s();
      e.details = {{"policy", policy}, {"shared_hashes", v.shared}};
      events_->publish(e);
    }
  }
  // Confidence and class per row in plain loops (see the header: no ATen kernels here).
  const auto z = logits.contiguous().to(torch::kFloat);
  const int64_t classes = z.size(1);
  const float* zp = z.data_ptr<float>();
  std::vector<float> conf(static_cast<size_t>(n));
  std::vector<int64_t> pred(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const float* row = zp + i * classes;
    const int64_t top = std::max_element(row, row + classes) - row;
    double sum = 0;
    for (int64_t k = 0; k < classes; ++k) sum += std::exp(static_cast<double>(row[k] - row[top]));
    conf[static_cast<size_t>(i)] = static_cast<float>(1.0 / sum);
    pred[static_cast<size_t>(i)] = top;
  }
  std::shared_ptr<detect::StreamMonitor> monitor;
  {
    std::lock_guard<std::mutex> lock(mu_);
    const auto it = monitors_.find(model);
    if (it != monitors_.end()) monitor = it->second;
  }
  if (monitor) {
    for (int64_t i = 0; i < n; ++i) {
      const bool hit = !flagged.empty() && flagged[static_cast<size_t>(i)];
      monitor->observe(now_s, conf[i], hit, pred[i]);
    }
  }
  if (request_id.empty() || request_id.size() > kMaxFeedbackIdBytes) return;
  remember(request_id, Answered{model, version, std::move(pred), now_s});
}

void Guard::set_feedback_possible(bool possible) {
  std::lock_guard<std::mutex> lock(mu_);
  feedback_possible_ = possible;
  if (!possible) {
    answered_.clear();
    order_.clear();
  }
}

size_t Guard::remembered() const {
  std::lock_guard<std::mutex> lock(mu_);
  return answered_.size();
}

void Guard::remember(const std::string& id, Answered a) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!feedback_possible_) return;
  const double now_s = a.time_s;
  answered_[id] = std::move(a);  // a re-used id answers for its latest request
  order_.emplace_back(now_s, id);
  // Evict by age, then by count. `order_` may hold stale duplicates of re-used ids: an entry is
  // only erased when its time matches the live record.
  while (!order_.empty() && (order_.size() > static_cast<size_t>(options_.feedback_capacity) ||
                             now_s - order_.front().first > options_.feedback_ttl_s)) {
    const auto& [t, old] = order_.front();
    const auto it = answered_.find(old);
    if (it != answered_.end() && it->second.time_s == t) answered_.erase(it);
    order_.pop_front();
  }
}

FeedbackResult Guard::feedback(const std::string& model, const std::string& id, const std::vector<int64_t>& labels,
                               double now_s) {
  Answered a;
  std::shared_ptr<detect::StreamMonitor> monitor;
  {
    std::lock_guard<std::mutex> lock(mu_);
    const auto it = answered_.find(id);
    const bool known = it != answered_.end() && now_s - it->second.time_s <= options_.feedback_ttl_s &&
                       it->second.model == model;
    if (!known) {
      throw not_found("request id '" + id.substr(0, 64) + "' is unknown or expired for model '" + model +
                      "' (the last " + std::to_string(options_.feedback_capacity) + " ids are kept for " +
                      seconds_text(options_.feedback_ttl_s) + " s)");
    }
    if (labels.size() != it->second.predicted.size()) {
      throw invalid_argument("labels: request '" + id.substr(0, 64) + "' had " +
                             std::to_string(it->second.predicted.size()) + " rows, got " +
                             std::to_string(labels.size()) + " labels");
    }
    a = std::move(it->second);
    answered_.erase(it);  // one label per answer: a second post is a 404, not a double count
    const auto m = monitors_.find(model);
    if (m != monitors_.end()) monitor = m->second;
  }
  FeedbackResult r;
  r.rows = static_cast<int64_t>(labels.size());
  for (size_t i = 0; i < labels.size(); ++i) {
    const bool ok = labels[i] == a.predicted[i];
    r.correct += ok;
    if (monitor) monitor->feedback(now_s, ok);
  }
  metrics_.counter("bulwark_feedback_total", {{"model", model}, {"result", "correct"}}, static_cast<double>(r.correct));
  metrics_.counter("bulwark_feedback_total", {{"model", model}, {"result", "wrong"}},
                   static_cast<double>(r.rows - r.correct));
  return r;
}

bool Guard::expose_to(bool admin) const {
  return options_.expose == ExposeScores::kAll || (options_.expose == ExposeScores::kAdmin && admin);
}

void Guard::publish_gauges(double now_s) {
  std::map<std::string, std::shared_ptr<detect::StreamMonitor>> monitors;
  {
    std::lock_guard<std::mutex> lock(mu_);
    monitors = monitors_;
  }
  for (const auto& entry : monitors) {
    const std::string& name = entry.first;  // structured bindings cannot be captured before C++20 (clang)
    const auto s = entry.second->snapshot(now_s);
    auto value = [&](const char* stat, double v) {
      metrics_.gauge("bulwark_monitor_value", {{"model", name}, {"statistic", stat}}, std::isfinite(v) ? v : 0.0);
    };
    value("mean_confidence", s.mean_confidence);
    value("detector_hit_rate", s.detector_hit_rate);
    value("feedback_accuracy", s.accuracy);
    value("observation_rate_hz", s.observation_rate_hz);
    for (const auto& d : s.detectors) {
      metrics_.gauge("bulwark_monitor_cusum", {{"model", name}, {"detector", d.name}}, d.statistic);
      metrics_.gauge("bulwark_monitor_threshold", {{"model", name}, {"detector", d.name}},
                     std::isfinite(d.threshold) ? d.threshold : -1.0);
    }
  }
  if (stateful_) {
    const auto st = stateful_->stats(now_s);
    metrics_.gauge("bulwark_stateful_clients", {}, static_cast<double>(st.clients));
    metrics_.gauge("bulwark_stateful_memory_bytes", {{"kind", "used"}}, static_cast<double>(st.memory_bytes));
    metrics_.gauge("bulwark_stateful_memory_bytes", {{"kind", "cap"}}, static_cast<double>(st.memory_cap_bytes));
  }
}

nlohmann::json Guard::status(double now_s) const {
  nlohmann::json j{{"stateful", stateful_ ? stateful_->stats(now_s).to_json() : nlohmann::json(nullptr)}};
  std::map<std::string, std::shared_ptr<detect::StreamMonitor>> monitors;
  {
    std::lock_guard<std::mutex> lock(mu_);
    monitors = monitors_;
  }
  j["monitors"] = nlohmann::json::object();
  for (const auto& [name, m] : monitors) j["monitors"][name] = m->snapshot(now_s).to_json();
  j["feedback"] = {{"remembered", remembered()}, {"capacity", options_.feedback_capacity},
                   {"ttl_s", options_.feedback_ttl_s}};
  j["events"] = nlohmann::json::array();
  for (const auto& e : events_->recent(20)) j["events"].push_back(e.to_json());
  return j;
}

}  // namespace bulwark::serve
