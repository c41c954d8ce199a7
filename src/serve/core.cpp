#include "serve/core.h"

#include <torch/torch.h>

#include <chrono>
#include <cmath>
#include <ctime>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/version.h"
#include "model/model.h"
#include "serve/status.h"

namespace bulwark::serve {

struct InferenceCore::Slot {
  std::string name, version, path;
  model::Model model;
  std::unique_ptr<DynamicBatcher> batcher;  // declared last: destroyed (drained) first
};

namespace {

using Clock = std::chrono::steady_clock;

std::string shape_text(const std::vector<int64_t>& s) {
  std::string t = "[";
  for (size_t i = 0; i < s.size(); ++i) t += (i ? ", " : "") + std::to_string(s[i]);
  return t + "]";
}

// The model's input as a float tensor [N, C, H, W], or invalid_argument naming the input and rule.
torch::Tensor to_model_input(const InferRequest& r, const model::ModelSpec& spec, int64_t max_elements) {
  if (r.inputs.size() != 1) {
    throw invalid_argument("inputs: the model takes exactly 1 input ('" + std::string(kInputName) + "'), got " +
                           std::to_string(r.inputs.size()));
  }
  const auto& in = r.inputs[0];
  const std::string where = "input '" + in.name + "'";
  if (in.name != kInputName) {
    throw invalid_argument("unknown " + where + " (the model's input is '" + std::string(kInputName) + "')");
  }
  if (in.datatype != "FP32" && in.datatype != "UINT8") {
    throw invalid_argument(where + ": datatype '" + in.datatype + "' is not supported (FP32 or UINT8)");
  }
  const int64_t count = checked_element_count(in.shape, max_elements, where);
  const auto& chw = spec.input_shape;  // C, H, W
  const std::vector<int64_t> rest(in.shape.begin() + 1, in.shape.end());
  const int64_t per_row = chw[0] * chw[1] * chw[2];
  const bool ok = rest == chw || (chw[0] == 1 && rest == std::vector<int64_t>{chw[1], chw[2]}) ||
                  rest == std::vector<int64_t>{per_row};
  if (!ok) {
    throw invalid_argument(where + ": shape " + shape_text(in.shape) + " does not fit the model's input [N, " +
                           std::to_string(chw[0]) + ", " + std::to_string(chw[1]) + ", " + std::to_string(chw[2]) +
                           "] (also accepted: [N, " + std::to_string(per_row) + "]" +
                           (chw[0] == 1 ? ", [N, " + std::to_string(chw[1]) + ", " + std::to_string(chw[2]) + "]" : "") +
                           ")");
  }
  if (static_cast<int64_t>(in.values.size()) != count) {
    throw invalid_argument(where + ": shape " + shape_text(in.shape) + " holds " + std::to_string(count) +
                           " values, got " + std::to_string(in.values.size()));
  }
  const bool u8 = in.datatype == "UINT8";
  const float lo = u8 ? 0.0f : spec.lo, hi = u8 ? 255.0f : spec.hi;
  const float tol = u8 ? 0.0f : 1e-6f * std::max(1.0f, std::abs(hi - lo));
  for (size_t i = 0; i < in.values.size(); ++i) {
    const float v = in.values[i];
    if (!std::isfinite(v)) throw invalid_argument(where + ": value at index " + std::to_string(i) + " is NaN or Inf");
    if (v < lo - tol || v > hi + tol || (u8 && v != std::floor(v))) {
      char msg[200];
      std::snprintf(msg, sizeof msg, ": value %g at index %zu is outside the %s range [%g, %g]", v, i,
                    u8 ? "UINT8 (integers)" : "model's", lo, hi);
      throw invalid_argument(where + msg);
    }
  }
  auto x = torch::from_blob(const_cast<float*>(in.values.data()), {in.shape[0], chw[0], chw[1], chw[2]},
                            torch::kFloat)
               .clone();
  if (u8) x = spec.lo + x / 255.0f * (spec.hi - spec.lo);
  return x.clamp_(spec.lo, spec.hi);
}

InferOutput fp32_output(const std::string& name, const torch::Tensor& t, bool binary) {
  InferOutput o;
  o.name = name;
  o.datatype = "FP32";
  o.shape = t.sizes().vec();
  const auto c = t.contiguous().to(torch::kFloat);
  o.fp32.assign(c.data_ptr<float>(), c.data_ptr<float>() + c.numel());
  o.binary = binary;
  return o;
}

std::string iso_time_now() {
  const auto now = std::chrono::system_clock::now();
  const auto t = std::chrono::system_clock::to_time_t(now);
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[40];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  char out[48];
  std::snprintf(out, sizeof out, "%s.%03lldZ", buf, static_cast<long long>(ms));
  return out;
}

}  // namespace

int64_t checked_element_count(const std::vector<int64_t>& shape, int64_t max_elements, const std::string& where) {
  if (shape.empty()) throw invalid_argument(where + ": shape is empty");
  if (shape.size() > 8) throw invalid_argument(where + ": shape has " + std::to_string(shape.size()) + " dims (max 8)");
  int64_t count = 1;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] < 1) {
      throw invalid_argument(where + ": shape[" + std::to_string(i) + "] = " + std::to_string(shape[i]) +
                             " must be >= 1");
    }
    if (shape[i] > max_elements || count > max_elements / shape[i]) {
      throw Error(ErrorKind::kInvalidArgument,
                  where + ": shape " + shape_text(shape) + " exceeds the limit of " + std::to_string(max_elements) +
                      " elements per tensor (--max-elements)");
    }
    count *= shape[i];
  }
  return count;
}

void CoreOptions::validate() const {
  batching.validate();
  make_scorer(guard);
  if (!(guard_threshold >= 0 && guard_threshold <= 1)) throw invalid_argument("--guard-threshold must be in [0, 1]");
  if (max_elements < 1) throw invalid_argument("--max-elements must be positive");
}

InferenceCore::InferenceCore(CoreOptions options) : options_(std::move(options)) {
  options_.validate();
  scorer_ = make_scorer(options_.guard);
  tokens_ = std::make_shared<TokenStore>();
  if (options_.access_log == "-") {
    log_ = stderr;
  } else if (options_.access_log != "off" && !options_.access_log.empty()) {
    log_ = std::fopen(options_.access_log.c_str(), "a");
    if (!log_) throw io_error("--access-log: cannot open " + options_.access_log + " for appending");
    own_log_ = true;
  }
}

InferenceCore::~InferenceCore() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    slots_.clear();
  }
  if (own_log_) std::fclose(log_);
}

std::string InferenceCore::load_model(const std::string& name, const std::string& path_in) {
  if (name.empty() || name.find_first_of("/ \t\n?#") != std::string::npos || name.size() > 128) {
    throw invalid_argument("model name '" + name + "' must be 1..128 characters without '/', '?', '#' or spaces");
  }
  std::string path = path_in;
  if (path.empty()) {
    std::lock_guard<std::mutex> lock(mu_);
    const auto it = paths_.find(name);
    if (it == paths_.end()) throw invalid_argument("model '" + name + "' has no known path: give parameters.path");
    path = it->second;
  }
  auto slot = std::make_shared<Slot>(Slot{name, "", path, model::Model::load(path), nullptr});
  slot->model.set_training(false);
  slot->model.set_parameters_require_grad(false);
  // Warm up (TorchScript profiles the first calls) so the first client does not pay for it.
  {
    torch::NoGradGuard ng;
    auto shape = slot->model.spec().input_shape;
    shape.insert(shape.begin(), 1);
    slot->model.logits(torch::full(shape, slot->model.spec().lo));
  }
  const auto scorer = scorer_;
  const model::Model m = slot->model;
  slot->batcher = std::make_unique<DynamicBatcher>(options_.batching, [m, scorer](const at::Tensor& x) {
    torch::NoGradGuard ng;
    auto logits = m.logits(x);
    at::Tensor scores;
    if (scorer) scores = scorer->score(logits);
    return std::make_pair(logits, scores);
  });
  std::shared_ptr<Slot> old;
  {
    std::lock_guard<std::mutex> lock(mu_);
    slot->version = std::to_string(++versions_[name]);
    paths_[name] = path;
    auto& s = slots_[name];
    old = std::move(s);
    s = slot;
  }
  publish_model_info();
  return slot->version;  // `old` is released here; its batcher drains once its requests finish
}

void InferenceCore::unload_model(const std::string& name) {
  std::shared_ptr<Slot> old;
  {
    std::lock_guard<std::mutex> lock(mu_);
    const auto it = slots_.find(name);
    if (it == slots_.end()) throw not_found("model '" + name + "' is not loaded");
    old = std::move(it->second);
    slots_.erase(it);
  }
  publish_model_info();
}

std::vector<RepositoryEntry> InferenceCore::index() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<RepositoryEntry> out;
  for (const auto& [name, last] : versions_) {
    const auto it = slots_.find(name);
    if (it != slots_.end()) out.push_back({name, it->second->version, "READY", ""});
    else out.push_back({name, std::to_string(last), "UNAVAILABLE", "unloaded"});
  }
  return out;
}

void InferenceCore::publish_model_info() {
  std::vector<std::pair<std::string, std::string>> nv;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [name, slot] : slots_) nv.emplace_back(name, slot->version);
  }
  metrics_.set_models(nv);
}

std::shared_ptr<InferenceCore::Slot> InferenceCore::find(const std::string& name, const std::string& version) const {
  std::lock_guard<std::mutex> lock(mu_);
  const auto it = slots_.find(name);
  if (it == slots_.end()) throw not_found("model '" + name + "' is not loaded");
  if (!version.empty() && version != it->second->version) {
    throw not_found("model '" + name + "' version '" + version + "' is not served (serving version " +
                    it->second->version + ")");
  }
  return it->second;
}

bool InferenceCore::ready() const {
  if (draining_) return false;
  std::lock_guard<std::mutex> lock(mu_);
  return !slots_.empty();
}

bool InferenceCore::model_ready(const std::string& name, const std::string& version) const {
  if (draining_) return false;
  try {
    find(name, version);
    return true;
  } catch (const Error&) {
    return false;
  }
}

ModelMetadata InferenceCore::model_metadata(const std::string& name, const std::string& version) const {
  const auto slot = find(name, version);
  const auto& spec = slot->model.spec();
  ModelMetadata md;
  md.name = name;
  md.versions = {slot->version};
  std::vector<int64_t> in_shape{-1};
  in_shape.insert(in_shape.end(), spec.input_shape.begin(), spec.input_shape.end());
  md.inputs = {{kInputName, "FP32", in_shape}};
  const int64_t k = spec.num_classes();
  md.outputs = {{"logits", "FP32", {-1, k}}, {"probabilities", "FP32", {-1, k}}, {"label", "BYTES", {-1}}};
  return md;
}

std::vector<std::string> InferenceCore::extensions() const {
  return {"model_repository", "binary_tensor_data", "bulwark_guard"};
}

void InferenceCore::set_tokens(std::shared_ptr<TokenStore> tokens) {
  std::lock_guard<std::mutex> lock(mu_);
  tokens_ = std::move(tokens);
}

Principal InferenceCore::authorize(const std::string& authorization, Role role) {
  std::shared_ptr<TokenStore> tokens;
  {
    std::lock_guard<std::mutex> lock(mu_);
    tokens = tokens_;
  }
  return tokens->authorize(authorization, role);
}

InferResponse InferenceCore::infer(const InferRequest& r, const std::string& authorization,
                                   const std::string& transport) {
  const auto start = Clock::now();
  const std::string request_id = r.id.empty() ? "bw-" + std::to_string(++request_counter_) : r.id;
  Principal who;
  std::string version = r.version;
  metrics_.inflight_add(1);
  struct InflightGuard {
    Metrics& m;
    ~InflightGuard() { m.inflight_add(-1); }
  } inflight{metrics_};
  try {
    who = authorize(authorization, Role::kInfer);
    if (draining_) throw unavailable("the server is shutting down");
    const auto slot = find(r.model, r.version);  // held until the response is built: hot swap safe
    version = slot->version;
    const auto& spec = slot->model.spec();
    const auto x = to_model_input(r, spec, options_.max_elements);
    for (const auto& o : r.outputs) {
      if (o.name != "logits" && o.name != "probabilities" && o.name != "label") {
        throw invalid_argument("output '" + o.name + "' is unknown (known: logits, probabilities, label)");
      }
    }
    auto result = slot->batcher->submit(x).get();
    InferResponse resp;
    resp.model = r.model;
    resp.version = slot->version;
    resp.id = r.id;
    auto requested = r.outputs;
    if (requested.empty()) requested.push_back({"logits", r.binary_outputs});
    for (const auto& o : requested) {
      const bool binary = o.binary || r.binary_outputs;
      if (o.name == "logits") {
        resp.outputs.push_back(fp32_output("logits", result.logits, binary));
      } else if (o.name == "probabilities") {
        resp.outputs.push_back(fp32_output("probabilities", torch::softmax(result.logits, 1), binary));
      } else {
        InferOutput lab;
        lab.name = "label";
        lab.datatype = "BYTES";
        lab.binary = binary;
        const auto idx = result.logits.argmax(1).contiguous();
        const int64_t* top = idx.data_ptr<int64_t>();
        for (int64_t i = 0; i < idx.size(0); ++i) {
          const auto c = top[i];
          lab.bytes.push_back(c < spec.num_classes() ? spec.class_names[c] : std::to_string(c));
        }
        lab.shape = {static_cast<int64_t>(lab.bytes.size())};
        resp.outputs.push_back(std::move(lab));
      }
    }
    if (result.scores.defined()) {
      resp.scorer = scorer_->name();
      const auto s = result.scores.contiguous().to(torch::kFloat);
      const float* score = s.data_ptr<float>();
      for (int64_t i = 0; i < s.size(0); ++i) {
        const float v = score[i];
        resp.attack_scores.push_back(v);
        resp.attack_flags.push_back(v > options_.guard_threshold);
        metrics_.attack_score(r.model, version, v, v > options_.guard_threshold);
      }
    }
    const double latency = std::chrono::duration<double>(Clock::now() - start).count();
    metrics_.request_success(r.model, version);
    metrics_.request_duration(r.model, version, latency);
    metrics_.queue_duration(r.model, version, result.queue_s);
    metrics_.compute_duration(r.model, version, result.compute_s);
    metrics_.batch_size(r.model, version, result.batch_rows);
    log_access(request_id, who, transport, r.model, version, latency, 200, "", &resp);
    return resp;
  } catch (const Error& e) {
    const double latency = std::chrono::duration<double>(Clock::now() - start).count();
    metrics_.request_failure(r.model, version, reason_label(e.kind()));
    log_access(request_id, who, transport, r.model, version, latency, http_status(e.kind()), e.what(), nullptr);
    throw;
  } catch (const std::exception& e) {
    const double latency = std::chrono::duration<double>(Clock::now() - start).count();
    metrics_.request_failure(r.model, version, "internal");
    log_access(request_id, who, transport, r.model, version, latency, 500, e.what(), nullptr);
    throw internal_error(std::string("inference failed: ") + e.what());
  }
}

void InferenceCore::log_access(const std::string& request_id, const Principal& who, const std::string& transport,
                               const std::string& model, const std::string& version, double latency_s, int status,
                               const std::string& error, const InferResponse* response) {
  if (!log_) return;
  nlohmann::json j{{"time", iso_time_now()}, {"request_id", request_id}, {"token_id", who.token_id},
                   {"transport", transport},  {"model", model},           {"version", version},
                   {"latency_ms", latency_s * 1e3}, {"status", status}};
  if (!error.empty()) j["error"] = error;
  if (response && !response->attack_scores.empty()) {
    float max_score = 0;
    bool flagged = false;
    for (size_t i = 0; i < response->attack_scores.size(); ++i) {
      max_score = std::max(max_score, response->attack_scores[i]);
      flagged = flagged || response->attack_flags[i];
    }
    j["score"] = max_score;
    j["flagged"] = flagged;
  }
  const auto line = j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
  std::lock_guard<std::mutex> lock(log_mu_);
  std::fwrite(line.data(), 1, line.size(), log_);
  std::fflush(log_);
}

}  // namespace bulwark::serve
