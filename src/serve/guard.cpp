#include "serve/guard.h"

#include <torch/torch.h>

#include <arpa/inet.h>

#include <algorithm>
#include <cmath>
#include <set>

#include "core/digest.h"
#include "core/error.h"
#include "model/model.h"
#include "serve/auth.h"

namespace bulwark::serve {
namespace {

constexpr size_t kMaxFeedbackIdBytes = 256;
constexpr size_t kMaxLedgers = 32;          // model versions with a label ledger
constexpr size_t kMaxLabellers = 1024;      // distinct labellers told apart per version
constexpr size_t kMaxEvidence = 4096;       // identities with alarm evidence

std::string seconds_text(double s) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.0f", std::ceil(std::max(0.0, s)));
  return buf;
}

// A throttled client's one request per interval: admits it (noting the time) or throws 429 with
// the wait. `last` holds only throttled clients; stale entries go once it outgrows `bound`. The
// caller holds the lock guarding `last`.
void charge_throttle(std::map<std::string, double>& last, const std::string& client, double interval_s, size_t bound,
                     const std::string& reason, Metrics& metrics, double now_s,
                     const char* refused_metric = "bulwark_stateful_refused_total") {
  auto [it, fresh] = last.emplace(client, now_s);
  if (!fresh) {
    const double wait = interval_s - (now_s - it->second);
    if (wait > 0) {
      metrics.counter(refused_metric, {{"policy", "throttle"}});
      throw RateLimitedError("client throttled to 1 request per " + seconds_text(interval_s) + " s: " + reason, wait);
    }
    it->second = now_s;
  }
  if (last.size() > bound) {
    for (auto i = last.begin(); i != last.end();) i = now_s - i->second > interval_s ? last.erase(i) : std::next(i);
  }
}

}  // namespace

nlohmann::json LabelCount::to_json() const {
  return {{"labels", labels}, {"correct", correct}, {"labellers", labellers},
          {"accuracy", labels > 0 ? nlohmann::json(accuracy()) : nlohmann::json(nullptr)}};
}

std::string network_identity(const std::string& peer, int prefix_v4, int prefix_v6) {
  std::string host = peer;
  if (!host.empty() && host.front() == '[') {  // [v6]:port
    const auto close = host.find(']');
    host = close == std::string::npos ? host : host.substr(1, close - 1);
  } else if (std::count(host.begin(), host.end(), ':') == 1) {  // v4:port
    host = host.substr(0, host.find(':'));
  }
  unsigned char addr[16] = {};
  int bits = 0, len = 0, family = 0;
  if (inet_pton(AF_INET, host.c_str(), addr) == 1) {
    bits = 32, len = prefix_v4, family = AF_INET;
  } else if (inet_pton(AF_INET6, host.c_str(), addr) == 1) {
    bits = 128, len = prefix_v6, family = AF_INET6;
  } else {
    return "peer:" + peer.substr(0, 128);
  }
  for (int i = 0; i < bits / 8; ++i) {
    const int keep = std::clamp(len - 8 * i, 0, 8);
    addr[i] &= static_cast<unsigned char>(0xFF00 >> keep);
  }
  char text[INET6_ADDRSTRLEN] = {};
  inet_ntop(family, addr, text, sizeof text);
  return std::string("net:") + text + "/" + std::to_string(len);
}

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
  if (extraction != "off") detect::parse_extraction_policy(extraction);
  if (!(throttle_interval_s > 0 && throttle_interval_s <= 3600)) {
    throw invalid_argument("--throttle-interval-s must be in (0, 3600]");
  }
  if (feedback_capacity < 1 || feedback_capacity > 10000000) {
    throw invalid_argument("--feedback-capacity must be in 1..10000000");
  }
  if (!(feedback_ttl_s > 0 && feedback_ttl_s <= 7 * 86400)) throw invalid_argument("--feedback-ttl-s must be in (0, 604800]");
  if (prefix_v4 < 8 || prefix_v4 > 32) throw invalid_argument("--client-prefix-v4 must be in 8..32");
  if (prefix_v6 < 16 || prefix_v6 > 128) throw invalid_argument("--client-prefix-v6 must be in 16..128");
  if (ledger_capacity < 100 || ledger_capacity > 10000000) throw invalid_argument("ledger capacity must be in 100..10000000");
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
  if (options_.extraction != "off") {
    auto eo = options_.extraction_options;
    eo.policy(detect::parse_extraction_policy(options_.extraction));
    extraction_ = std::make_unique<detect::ExtractionDetector>(eo);
  }
  events_->subscribe([this](const detect::Event& e) {
    if (e.kind == "alarm") metrics_.counter("bulwark_alarms_total", {{"model", e.model}, {"detector", e.detector}});
  });
}

std::shared_ptr<const detect::DetectorSet> Guard::detectors_for(const std::string& name, const model::Model& m,
                                                                const std::string& model_sha256,
                                                                const std::string& calibration,
                                                                const std::string* calibration_bytes) const {
  const auto it = options_.calibration.find(name);
  const std::string file = !calibration.empty() ? calibration : it != options_.calibration.end() ? it->second : "";
  if (!file.empty()) {
    auto set = calibration_bytes != nullptr ? detect::DetectorSet::parse(*calibration_bytes, file, m, model_sha256)
                                            : detect::DetectorSet::load(file, m, model_sha256);
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
  if (extraction_) {
    const auto st = extraction_->state(client, now_s);
    if (st.blocked) {
      metrics_.counter("bulwark_extraction_refused_total", {{"policy", "block"}});
      throw Error(ErrorKind::kPermissionDenied, "client blocked for another " + seconds_text(st.until_s - now_s) +
                                                    " s: " + st.reason);
    }
    if (st.throttled) {
      std::lock_guard<std::mutex> lock(mu_);
      charge_throttle(throttle_last_, client, options_.throttle_interval_s, throttle_bound(), st.reason, metrics_, now_s,
                      "bulwark_extraction_refused_total");
    }
  }
  if (!stateful_) return;
  const auto st = stateful_->state(client, now_s);
  if (st.blocked) {
    metrics_.counter("bulwark_stateful_refused_total", {{"policy", "block"}});
    throw Error(ErrorKind::kPermissionDenied, "client blocked for another " + seconds_text(st.until_s - now_s) +
                                                  " s: " + st.reason);
  }
  if (!st.throttled) return;
  std::lock_guard<std::mutex> lock(mu_);
  charge_throttle(throttle_last_, client, options_.throttle_interval_s, throttle_bound(), st.reason, metrics_, now_s);
}

std::string Guard::identity(const std::string& token_id, const std::string& peer) const {
  if (token_id != "anonymous") return "token:" + token_id;
  return network_identity(peer, options_.prefix_v4, options_.prefix_v6);
}

void Guard::check_queries(const std::string& model, const std::string& version, const std::string& client,
                          const at::Tensor& x, double now_s) {
  if (!stateful_) return;
  const auto flat = x.contiguous().to(torch::kFloat);  // already so: no copy
  const int64_t n = flat.size(0);
  // Rows as the model takes them: [n, C, H, W] images keep their layout for the distance test's
  // cells; anything else is a flat vector per row.
  detect::Shape shape{1, 1, flat.numel() / std::max<int64_t>(1, n)};
  if (flat.dim() == 4) shape = {flat.size(1), flat.size(2), flat.size(3)};
  if (flat.dim() == 3) shape = {1, flat.size(1), flat.size(2)};
  const auto verdicts = stateful_->observe_rows(client, flat.data_ptr<float>(), n, shape, now_s);
  const auto policy = detect::to_string(stateful_->options().policy());
  bool blocked = false, throttled = false;
  for (const auto& v : verdicts) {
    if (v.hit) metrics_.counter("bulwark_stateful_hits_total", {{"model", model}});
    blocked = blocked || v.blocked;
    throttled = throttled || v.throttled;
    if (!v.newly_flagged) continue;
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
    e.details = {{"policy", policy}, {"shared_hashes", v.shared}, {"nearest_distance", v.nearest}};
    events_->publish(e);
  }
  if (!blocked && !throttled) return;
  // The request that crossed the threshold is refused whole, like every one after it (admit()).
  const auto st = stateful_->state(client, now_s);
  if (blocked) {
    metrics_.counter("bulwark_stateful_refused_total", {{"policy", "block"}});
    throw Error(ErrorKind::kPermissionDenied,
                "client blocked for another " + seconds_text(st.until_s - now_s) + " s: " + st.reason);
  }
  std::lock_guard<std::mutex> lock(mu_);
  charge_throttle(throttle_last_, client, options_.throttle_interval_s, throttle_bound(), st.reason, metrics_, now_s);
}

void Guard::check_answers(const std::string& model, const std::string& version, const std::string& client,
                          const at::Tensor& x, const at::Tensor& logits, double now_s) {
  if (!extraction_) return;
  const auto flat = x.contiguous().to(torch::kFloat);  // already so: no copy
  const auto z = logits.contiguous().to(torch::kFloat);
  const int64_t n = flat.size(0);
  detect::Shape shape{1, 1, flat.numel() / std::max<int64_t>(1, n)};
  if (flat.dim() == 4) shape = {flat.size(1), flat.size(2), flat.size(3)};
  if (flat.dim() == 3) shape = {1, flat.size(1), flat.size(2)};
  const auto verdicts =
      extraction_->observe_rows(client, flat.data_ptr<float>(), n, shape, z.data_ptr<float>(), z.size(1), now_s);
  const auto& eo = extraction_->options();
  const auto policy = detect::to_string(eo.policy());
  bool blocked = false, throttled = false;
  for (const auto& v : verdicts) {
    blocked = blocked || v.blocked;
    throttled = throttled || v.throttled;
    if (!v.newly_flagged) continue;
    const char* statistic = v.prada ? "prada" : "unsure_share";
    metrics_.counter("bulwark_extraction_flagged_total", {{"policy", policy}, {"statistic", statistic}});
    detect::Event e;
    e.time_s = now_s;
    e.kind = v.blocked ? "client.blocked" : v.throttled ? "client.throttled" : "client.flagged";
    e.detector = "extraction";
    e.model = model;
    e.version = version;
    e.subject = client;
    e.statistic = v.prada ? v.w : v.unsure_share;
    e.threshold = v.prada ? eo.delta() : eo.max_unsure_share();
    e.window_s = eo.block_s();
    e.details = {{"policy", policy},          {"statistic", statistic},      {"w", v.w},
                 {"distances", v.distances},  {"unsure_share", v.unsure_share}, {"queries", v.client_queries}};
    events_->publish(e);
  }
  if (!blocked && !throttled) return;
  const auto st = extraction_->state(client, now_s);
  if (blocked) {
    metrics_.counter("bulwark_extraction_refused_total", {{"policy", "block"}});
    throw Error(ErrorKind::kPermissionDenied,
                "client blocked for another " + seconds_text(st.until_s - now_s) + " s: " + st.reason);
  }
  std::lock_guard<std::mutex> lock(mu_);
  charge_throttle(throttle_last_, client, options_.throttle_interval_s, throttle_bound(), st.reason, metrics_, now_s,
                  "bulwark_extraction_refused_total");
}

size_t Guard::throttle_bound() const {
  return static_cast<size_t>(
      std::max(options_.stateful_options.max_clients(), options_.extraction_options.max_clients()));
}

void Guard::after_inference(const std::string& model, const std::string& version, const std::string& client,
                            const std::string& feedback_id, const at::Tensor& logits, const std::vector<uint8_t>& flagged,
                            double now_s) {
  const int64_t n = logits.size(0);
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
  for (int64_t i = 0; i < n; ++i) {
    const bool hit = !flagged.empty() && flagged[static_cast<size_t>(i)];
    if (monitor) monitor->observe(now_s, conf[i], hit, pred[i]);
  }
  note_evidence(model, client, pred, conf, flagged, monitor.get(), now_s);
  if (feedback_id.empty() || feedback_id.size() > kMaxFeedbackIdBytes) return;
  remember(feedback_id, Answered{model, version, std::move(pred), now_s});
}

void Guard::note_evidence(const std::string& model, const std::string& client, const std::vector<int64_t>& pred,
                          const std::vector<float>& conf, const std::vector<uint8_t>& flagged,
                          const detect::StreamMonitor* monitor, double now_s) {
  const double tau = options_.monitor_options.window_s();
  // Low confidence: more than 2 sd below the clean reference (no reference: not counted).
  const double low = monitor ? monitor->reference().confidence_mean - 2 * monitor->reference().confidence_sd : -1;
  double hits = 0, lows = 0;
  std::array<double, 16> classes{};
  for (size_t i = 0; i < pred.size(); ++i) {
    const bool hit = !flagged.empty() && flagged[i];
    hits += hit;
    lows += hit || conf[i] < low;
    classes[static_cast<size_t>(pred[i]) % 16] += 1;
  }
  std::lock_guard<std::mutex> lock(mu_);
  const std::string key = model + '\n' + client;
  auto it = evidence_.find(key);
  if (it == evidence_.end()) {
    if (evidence_.size() >= kMaxEvidence) {  // the identity heard from least recently goes
      auto oldest = evidence_.begin();
      for (auto e = evidence_.begin(); e != evidence_.end(); ++e) {
        if (e->second.time_s < oldest->second.time_s) oldest = e;
      }
      evidence_.erase(oldest);
    }
    it = evidence_.emplace(key, Evidence{}).first;
    it->second.time_s = now_s;
  }
  Evidence& e = it->second;
  const double decay = std::exp(-std::max(0.0, now_s - e.time_s) / tau);
  e.rows = e.rows * decay + static_cast<double>(pred.size());
  e.flagged = e.flagged * decay + hits;
  e.low_confidence = e.low_confidence * decay + lows;
  for (size_t k = 0; k < classes.size(); ++k) e.classes[k] = e.classes[k] * decay + classes[k];
  e.time_s = std::max(e.time_s, now_s);
}

int64_t Guard::suspicious_identities(const std::string& model, const std::string& statistic, double since_s,
                                     double min_share, double min_rows) const {
  std::lock_guard<std::mutex> lock(mu_);
  const std::string prefix = model + '\n';
  int64_t n = 0;
  for (const auto& [key, e] : evidence_) {
    if (key.compare(0, prefix.size(), prefix) != 0 || e.time_s < since_s) continue;
    double anomalous = e.flagged, share = min_share;
    if (statistic == "confidence") anomalous = e.low_confidence;
    if (statistic == "class_mix") {
      anomalous = *std::max_element(e.classes.begin(), e.classes.end());
      share = std::max(share, 0.5);
    }
    n += anomalous >= min_rows && anomalous >= share * e.rows;
  }
  return n;
}

bool Guard::feedback_possible() const {
  std::lock_guard<std::mutex> lock(mu_);
  return feedback_possible_;
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
  // Ids are the server's (128 random bits): one never names two answers, and none is replaced.
  if (!answered_.emplace(id, std::move(a)).second) return;
  order_.emplace_back(now_s, id);
  // Evict by age, then by count (an id already labelled is gone from answered_ already).
  while (!order_.empty() && (order_.size() > static_cast<size_t>(options_.feedback_capacity) ||
                             now_s - order_.front().first > options_.feedback_ttl_s)) {
    answered_.erase(order_.front().second);
    order_.pop_front();
  }
}

FeedbackResult Guard::feedback(const std::string& model, const std::string& id, const std::vector<int64_t>& labels,
                               const std::string& labeller, double now_s) {
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
    // The stream monitor watches the version it was made for: labels of an older version's
    // answers count in that version's ledger only.
    if (m != monitors_.end() && m->second->version() == a.version) monitor = m->second;
    // The ledger of the version that answered, by answer time.
    auto key = std::make_pair(model, a.version);
    auto l = ledgers_.find(key);
    if (l == ledgers_.end()) {
      if (ledgers_.size() >= kMaxLedgers) {
        auto stale = ledgers_.begin();
        for (auto e = ledgers_.begin(); e != ledgers_.end(); ++e) {
          if (e->second.last_s < stale->second.last_s) stale = e;
        }
        ledgers_.erase(stale);
      }
      l = ledgers_.emplace(key, Ledger{}).first;
    }
    Ledger& ledger = l->second;
    auto who = std::find(ledger.labellers.begin(), ledger.labellers.end(), labeller);
    if (who == ledger.labellers.end()) {
      if (ledger.labellers.size() < kMaxLabellers) ledger.labellers.push_back(labeller);
      who = ledger.labellers.end() - 1;
    }
    const auto labeller_index = static_cast<uint16_t>(who - ledger.labellers.begin());
    for (size_t i = 0; i < labels.size(); ++i) {
      ledger.rows.push_back({a.time_s, labels[i] == a.predicted[i], labeller_index});
      if (static_cast<int64_t>(ledger.rows.size()) > options_.ledger_capacity) ledger.rows.pop_front();
    }
    ledger.last_s = now_s;
  }
  FeedbackResult r;
  r.rows = static_cast<int64_t>(labels.size());
  r.version = a.version;
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

LabelCount Guard::labelled(const std::string& model, const std::string& version, double from_s, double to_s) const {
  std::lock_guard<std::mutex> lock(mu_);
  LabelCount c;
  const auto l = ledgers_.find(std::make_pair(model, version));
  if (l == ledgers_.end()) return c;
  std::set<uint16_t> who;
  for (const auto& row : l->second.rows) {
    if (row.answered_s < from_s || row.answered_s >= to_s) continue;
    ++c.labels;
    c.correct += row.correct;
    who.insert(row.labeller);
  }
  c.labellers = static_cast<int64_t>(who.size());
  return c;
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
  if (extraction_) {
    const auto st = extraction_->stats(now_s);
    metrics_.gauge("bulwark_extraction_clients", {}, static_cast<double>(st.clients));
    metrics_.gauge("bulwark_extraction_memory_bytes", {{"kind", "used"}}, static_cast<double>(st.memory_bytes));
    metrics_.gauge("bulwark_extraction_memory_bytes", {{"kind", "cap"}}, static_cast<double>(st.memory_cap_bytes));
  }
}

std::optional<detect::StreamMonitor::Snapshot> Guard::monitor_snapshot(const std::string& model, double now_s) const {
  std::shared_ptr<detect::StreamMonitor> monitor;
  {
    std::lock_guard<std::mutex> lock(mu_);
    const auto it = monitors_.find(model);
    if (it == monitors_.end()) return std::nullopt;
    monitor = it->second;
  }
  return monitor->snapshot(now_s);
}

nlohmann::json Guard::status(double now_s) const {
  nlohmann::json j{{"stateful", stateful_ ? stateful_->stats(now_s).to_json() : nlohmann::json(nullptr)},
                   {"extraction", extraction_ ? extraction_->stats(now_s).to_json() : nlohmann::json(nullptr)}};
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
