#include "serve/metrics.h"

#include <algorithm>
#include <cstdio>
#include <set>
#include <sstream>

namespace bulwark::serve {
namespace {

const std::vector<double> kLatencyBounds{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                         0.1,    0.25,  0.5,    1.0,   2.5,   5.0,  10.0};
const std::vector<double> kBatchBounds{1, 2, 4, 8, 16, 32, 64, 128, 256};
const std::vector<double> kScoreBounds{0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0};

Labels mv(const std::string& model, const std::string& version) { return {{"model", model}, {"version", version}}; }

std::string format_number(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

std::string label_text(const Labels& l, const std::string& extra_key = "", const std::string& extra_value = "") {
  if (l.empty() && extra_key.empty()) return "";
  std::string s = "{";
  bool first = true;
  for (const auto& [k, v] : l) {
    s += (first ? "" : ",") + k + "=\"" + escape_label_value(v) + "\"";
    first = false;
  }
  if (!extra_key.empty()) s += (first ? "" : ",") + extra_key + "=\"" + extra_value + "\"";
  return s + "}";
}

}  // namespace

std::string escape_label_value(const std::string& v) {
  std::string out;
  out.reserve(v.size());
  for (size_t i = 0; i < v.size();) {
    const auto c = static_cast<unsigned char>(v[i]);
    if (c < 0x80) {
      if (c == '\\') out += "\\\\";
      else if (c == '"') out += "\\\"";
      else if (c == '\n') out += "\\n";
      else out += static_cast<char>(c);
      ++i;
      continue;
    }
    // The exposition format is UTF-8: a byte that does not start a well-formed sequence becomes
    // U+FFFD, so no label value can break a scrape.
    const size_t n = c >= 0xC2 && c <= 0xDF ? 1 : c >= 0xE0 && c <= 0xEF ? 2 : c >= 0xF0 && c <= 0xF4 ? 3 : 0;
    bool ok = n > 0;
    for (size_t k = 1; ok && k <= n; ++k) {
      ok = i + k < v.size() && (static_cast<unsigned char>(v[i + k]) & 0xC0) == 0x80;
    }
    if (ok) {
      out.append(v, i, n + 1);
      i += n + 1;
    } else {
      out += "\xEF\xBF\xBD";
      ++i;
    }
  }
  return out;
}

Metrics::Metrics() {
  auto family = [&](const std::string& name, const std::string& type, const std::string& help,
                    const std::vector<double>& bounds = {}) {
    Family f;
    f.name = name;
    f.type = type;
    f.help = help;
    f.hist.bounds = bounds;
    // Detector, monitor, feedback and loop series: diffs around one request recover its flag.
    for (const char* p : {"bulwark_attack_", "bulwark_stateful_", "bulwark_extraction_", "bulwark_monitor_", "bulwark_alarms_",
                          "bulwark_feedback_", "bulwark_guard_"}) {
      f.internal = f.internal || name.rfind(p, 0) == 0;
    }
    families_[name] = f;
    order_.push_back(name);
  };
  family("bulwark_inference_request_success_total", "counter", "Inference requests answered successfully");
  family("bulwark_inference_request_failure_total", "counter", "Inference requests that failed, by reason");
  family("bulwark_request_duration_seconds", "histogram", "Inference request time, receipt to response",
         kLatencyBounds);
  family("bulwark_queue_duration_seconds", "histogram", "Time a request waited in the batch queue", kLatencyBounds);
  family("bulwark_compute_duration_seconds", "histogram", "Model forward time of the batch a request ran in",
         kLatencyBounds);
  family("bulwark_batch_size", "histogram", "Rows per executed batch", kBatchBounds);
  family("bulwark_inflight_requests", "gauge", "Inference requests being handled now");
  family("bulwark_queue_rows", "gauge", "Rows admitted to a model's batch queue: waiting or in a forward pass (503 past --max-queue)");
  family("bulwark_attack_score", "histogram", "Per-input attack score from the guard scorer", kScoreBounds);
  family("bulwark_attack_flagged_total", "counter", "Inputs the guard scorer flagged as likely adversarial");
  family("bulwark_model_info", "gauge", "Models being served (value 1), by name and version");
  // Detection (detect module): labels are bounded (model, version, detector, policy): never a
  // client id, which a client could grow without bound.
  family("bulwark_stateful_hits_total", "counter", "Queries that matched an earlier query of the same client");
  family("bulwark_stateful_flagged_total", "counter", "Clients flagged by the query-similarity detector, by policy");
  family("bulwark_stateful_refused_total", "counter", "Requests refused because the client is blocked or throttled");
  family("bulwark_stateful_clients", "gauge", "Clients with stored query history");
  family("bulwark_stateful_memory_bytes", "gauge", "Query-history memory in use (estimate), and its cap");
  family("bulwark_extraction_flagged_total", "counter",
         "Clients flagged by the extraction detector, by policy and statistic (prada, unsure_share)");
  family("bulwark_extraction_refused_total", "counter", "Requests refused because the extraction detector blocked or throttled the client");
  family("bulwark_extraction_clients", "gauge", "Clients with extraction-detector history");
  family("bulwark_extraction_memory_bytes", "gauge", "Extraction-detector memory in use (estimate), and its cap");
  family("bulwark_monitor_value", "gauge", "Stream monitor windowed statistics, by statistic");
  family("bulwark_monitor_cusum", "gauge", "Stream monitor change-detection statistic, by detector");
  family("bulwark_monitor_threshold", "gauge", "Stream monitor alarm threshold, by detector");
  family("bulwark_alarms_total", "counter", "Alarms raised by the stream monitor, by detector");
  family("bulwark_feedback_total", "counter", "Labels posted as feedback, by result (correct, wrong)");
  family("bulwark_allow_unsigned", "gauge", "1 when the server accepts unsigned models (--allow-unsigned: development only)");
  family("bulwark_model_signed", "gauge", "1 when the model being served was verified against a trusted signature");
  family("bulwark_model_registry_version", "gauge", "Registry version being served, for models loaded from the registry");
  family("bulwark_model_loads_total", "counter", "Model loads and swaps, by result (ok, refused, failed)");
  family("bulwark_guard_state", "gauge", "The closed loop's state (1 for the current one), by model and state");
  family("bulwark_guard_transitions_total", "counter", "Closed-loop state transitions, by model and new state");
  family("bulwark_guard_gate_total", "counter", "Candidates gated, by model and result (passed, refused)");
}

void Metrics::counter(const std::string& name, const Labels& l, double v) { add(name, l, v); }

void Metrics::gauge(const std::string& name, const Labels& l, double v) {
  std::lock_guard<std::mutex> lock(mu_);
  families_.at(name).values[l] = v;
}

void Metrics::add(const std::string& name, const Labels& l, double v) {
  std::lock_guard<std::mutex> lock(mu_);
  families_.at(name).values[l] += v;
}

void Metrics::observe(const std::string& name, const Labels& l, double v) {
  std::lock_guard<std::mutex> lock(mu_);
  auto& h = families_.at(name).hist;
  auto& c = h.counts[l];
  if (c.empty()) c.assign(h.bounds.size() + 1, 0);
  const auto it = std::lower_bound(h.bounds.begin(), h.bounds.end(), v);  // first bound >= v (le semantics)
  ++c[static_cast<size_t>(it - h.bounds.begin())];
  h.sums[l] += v;
}

void Metrics::request_success(const std::string& model, const std::string& version) {
  add("bulwark_inference_request_success_total", mv(model, version), 1);
}
void Metrics::request_failure(const std::string& model, const std::string& version, const std::string& reason) {
  add("bulwark_inference_request_failure_total", {{"model", model}, {"version", version}, {"reason", reason}}, 1);
}
void Metrics::request_duration(const std::string& model, const std::string& version, double s) {
  observe("bulwark_request_duration_seconds", mv(model, version), s);
}
void Metrics::queue_duration(const std::string& model, const std::string& version, double s) {
  observe("bulwark_queue_duration_seconds", mv(model, version), s);
}
void Metrics::compute_duration(const std::string& model, const std::string& version, double s) {
  observe("bulwark_compute_duration_seconds", mv(model, version), s);
}
void Metrics::batch_size(const std::string& model, const std::string& version, int64_t rows) {
  observe("bulwark_batch_size", mv(model, version), static_cast<double>(rows));
}
void Metrics::attack_score(const std::string& model, const std::string& version, double score, bool flagged) {
  observe("bulwark_attack_score", mv(model, version), score);
  if (flagged) add("bulwark_attack_flagged_total", mv(model, version), 1);
}
void Metrics::inflight_add(int delta) {
  std::lock_guard<std::mutex> lock(mu_);
  inflight_ += delta;
}
void Metrics::set_models(const std::vector<std::pair<std::string, std::string>>& name_version) {
  std::lock_guard<std::mutex> lock(mu_);
  auto& f = families_.at("bulwark_model_info");
  f.values.clear();
  for (const auto& [n, v] : name_version) f.values[mv(n, v)] = 1;
  // Series of a version no longer served go (as Triton drops an unloaded model's): a hot swap
  // every few seconds must not grow /metrics and memory for good. Series without a version (the
  // `unknown` model, per-model monitor values) stay.
  std::set<std::pair<std::string, std::string>> served(name_version.begin(), name_version.end());
  const auto retired = [&served](const Labels& l) {
    std::string model, version;
    for (const auto& [k, v] : l) {
      if (k == "model") model = v;
      if (k == "version") version = v;
    }
    return !version.empty() && !served.count({model, version});
  };
  for (auto& [name, family] : families_) {
    for (auto it = family.values.begin(); it != family.values.end();) it = retired(it->first) ? family.values.erase(it) : std::next(it);
    auto& h = family.hist;
    for (auto it = h.counts.begin(); it != h.counts.end();) it = retired(it->first) ? h.counts.erase(it) : std::next(it);
    for (auto it = h.sums.begin(); it != h.sums.end();) it = retired(it->first) ? h.sums.erase(it) : std::next(it);
  }
}

std::string Metrics::render(bool internal) const {
  std::lock_guard<std::mutex> lock(mu_);
  std::ostringstream out;
  for (const auto& name : order_) {
    const auto& f = families_.at(name);
    if (f.internal && !internal) continue;
    out << "# HELP " << f.name << ' ' << f.help << "\n# TYPE " << f.name << ' ' << f.type << '\n';
    if (f.name == "bulwark_inflight_requests") {
      out << f.name << ' ' << inflight_ << '\n';
      continue;
    }
    if (f.type != "histogram") {
      for (const auto& [l, v] : f.values) out << f.name << label_text(l) << ' ' << format_number(v) << '\n';
      continue;
    }
    for (const auto& [l, c] : f.hist.counts) {
      uint64_t cumulative = 0;
      for (size_t i = 0; i < f.hist.bounds.size(); ++i) {
        cumulative += c[i];
        out << f.name << "_bucket" << label_text(l, "le", format_number(f.hist.bounds[i])) << ' ' << cumulative << '\n';
      }
      cumulative += c.back();
      out << f.name << "_bucket" << label_text(l, "le", "+Inf") << ' ' << cumulative << '\n';
      out << f.name << "_sum" << label_text(l) << ' ' << format_number(f.hist.sums.at(l)) << '\n';
      out << f.name << "_count" << label_text(l) << ' ' << cumulative << '\n';
    }
  }
  return out.str();
}

}  // namespace bulwark::serve
