#include "serve/core.h"

#include <torch/torch.h>

#include <chrono>

#include "core/digest.h"
#include "core/error.h"
#include "model/model.h"
#include "serve/outputs.h"
#include "serve/status.h"

namespace bulwark::serve {

struct InferenceCore::Slot {
  std::string name, version;
  ResolvedModel source;  // where it came from: reference, verified path, registry version
  model::Model model;
  std::shared_ptr<const detect::DetectorSet> detectors;  // null: detection off
  std::unique_ptr<DynamicBatcher> batcher;               // declared last: destroyed (drained) first
};

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// The batch thread's work: one forward pass (with features when a detector needs them), then
// every detector on the batch. Returns logits and the combined attack score per row.
DynamicBatcher::RunFn batch_runner(model::Model m, std::shared_ptr<const detect::DetectorSet> detectors) {
  return [m, detectors](const at::Tensor& x) {
    torch::NoGradGuard ng;
    detect::Batch b;
    b.x = x;
    if (detectors && detectors->needs_features()) std::tie(b.logits, b.features) = m.logits_and_features(x);
    else b.logits = m.logits(x);
    at::Tensor scores;
    if (detectors) scores = detectors->score(m, b).combined;
    return std::make_pair(b.logits, scores);
  };
}

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += (s.empty() ? "" : "+") + x;
  return s;
}

int64_t parse_label(const std::string& label, const model::ModelSpec& spec, size_t i) {
  for (int64_t k = 0; k < spec.num_classes(); ++k) {
    if (spec.class_names[k] == label) return k;
  }
  if (!label.empty() && label.size() < 10 && label.find_first_not_of("0123456789") == std::string::npos) {
    const int64_t k = std::stoll(label);
    if (k < spec.num_classes()) return k;
  }
  throw invalid_argument("labels[" + std::to_string(i) + "]: '" + label.substr(0, 64) +
                         "' is not a class of the model (0.." + std::to_string(spec.num_classes() - 1) +
                         " or a class name)");
}

}  // namespace

double unix_now_s() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

void CoreOptions::validate() const {
  batching.validate();
  guard.validate();
  if (max_elements < 1) throw invalid_argument("--max-elements must be positive");
}

InferenceCore::InferenceCore(CoreOptions options)
    : options_(std::move(options)), guard_((options_.validate(), options_.guard), metrics_),
      access_log_(options_.access_log), source_(std::make_unique<ModelSource>(options_.source)) {
  tokens_ = std::make_shared<TokenStore>();
  metrics_.gauge("bulwark_allow_unsigned", {}, options_.source.allow_unsigned ? 1 : 0);
  if (!options_.source.registry.empty()) follower_ = std::thread([this] { follow_stages(); });
}

InferenceCore::~InferenceCore() {
  if (follower_.joinable()) {
    {
      std::lock_guard<std::mutex> lock(follow_mu_);
      follow_stop_ = true;
    }
    follow_cv_.notify_all();
    follower_.join();
  }
  std::lock_guard<std::mutex> lock(mu_);
  slots_.clear();
}

std::string InferenceCore::load_model(const std::string& name, const std::string& reference) {
  return load(name, reference, false, "operator");
}

std::string InferenceCore::load_model_for_client(const std::string& name, const std::string& reference,
                                                 const Principal& who) {
  return load(name, reference, true, "token:" + who.token_id);
}

std::string InferenceCore::load(const std::string& name, const std::string& reference_in, bool from_client_in,
                                const std::string& actor) {
  bool from_client = from_client_in;
  if (name.empty() || name.find_first_of("/ \t\n?#") != std::string::npos || name.size() > 128) {
    throw invalid_argument("model name '" + name + "' must be 1..128 characters without '/', '?', '#' or spaces");
  }
  std::string reference = reference_in;
  bool replacing = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    const auto it = references_.find(name);
    if (reference.empty()) {
      if (it == references_.end()) throw invalid_argument("model '" + name + "' has no known source: give parameters.path");
      reference = it->second;  // what we stored: a registry reference or an already-confined path
      from_client = false;
    }
    replacing = slots_.count(name) != 0;
  }
  ResolvedModel resolved;
  std::shared_ptr<Slot> slot;
  try {
    resolved = source_->resolve(reference, from_client);
    slot = std::make_shared<Slot>(Slot{name, "", resolved, model::Model::load(resolved.path), nullptr, nullptr});
    slot->model.set_training(false);
    slot->model.set_parameters_require_grad(false);
    slot->detectors = guard_.detectors_for(name, slot->model, resolved.path, resolved.calibration);
  } catch (const std::exception& e) {
    metrics_.counter("bulwark_model_loads_total", {{"model", name}, {"result", "refused"}});
    source_->audit("serve.load-refused", name, {{"reference", reference}, {"error", e.what()}}, actor);
    throw;
  }
  slot->batcher = std::make_unique<DynamicBatcher>(options_.batching, batch_runner(slot->model, slot->detectors));
  // Warm up (TorchScript profiles the first calls) so the first client does not pay for it.
  {
    auto shape = slot->model.spec().input_shape;
    shape.insert(shape.begin(), 1);
    batch_runner(slot->model, slot->detectors)(torch::full(shape, slot->model.spec().lo));
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    slot->version = std::to_string(++versions_[name]);  // a load that fails from here on skips a number
  }
  auto monitor = guard_.make_monitor(name, slot->version, slot->detectors.get(), slot->model.spec().num_classes());
  std::shared_ptr<Slot> old;
  {
    std::lock_guard<std::mutex> lock(mu_);
    references_[name] = is_registry_reference(reference) ? reference : resolved.path;
    auto& s = slots_[name];
    old = std::move(s);
    s = slot;
  }
  guard_.model_loaded(name, std::move(monitor));
  publish_model_info();
  metrics_.counter("bulwark_model_loads_total", {{"model", name}, {"result", "ok"}});
  source_->audit(replacing ? "serve.swap" : "serve.load", name,
                 {{"reference", reference}, {"origin", resolved.origin}, {"served_version", slot->version},
                  {"signed", resolved.is_signed}, {"sha256", sha256_file_hex(resolved.path)}},
                 actor);
  return slot->version;  // `old` is released here; its batcher drains once its requests finish
}

void InferenceCore::follow_stages() {
  std::unique_lock<std::mutex> lock(follow_mu_);
  while (!follow_cv_.wait_for(lock, std::chrono::milliseconds(options_.source.follow_interval_ms),
                              [this] { return follow_stop_; })) {
    lock.unlock();
    std::vector<std::pair<std::string, std::shared_ptr<Slot>>> following;
    {
      std::lock_guard<std::mutex> slots_lock(mu_);
      for (const auto& [name, slot] : slots_) {
        if (slot->source.by_stage) following.emplace_back(name, slot);
      }
    }
    for (const auto& [name, slot] : following) {
      const int64_t now = source_->current_version(slot->source.reference);
      if (now == 0 || now == slot->source.registry_version || now == refused_version_[name]) continue;
      try {
        load(name, slot->source.reference, false, "serve:follow");
        std::cerr << "bulwark serve: '" << name << "' now serves " << slot->source.reference << " = version " << now
                  << " (hot swap)\n";
      } catch (const std::exception& e) {
        refused_version_[name] = now;  // audited once; retried when the stage moves again
        std::cerr << "bulwark serve: '" << name << "' keeps serving " << slot->source.origin << ": " << e.what() << "\n";
      }
    }
    lock.lock();
  }
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
  guard_.model_unloaded(name);
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
    for (const auto& [name, slot] : slots_) {
      nv.emplace_back(name, slot->version);
      metrics_.gauge("bulwark_model_signed", {{"model", name}}, slot->source.is_signed ? 1 : 0);
      if (slot->source.registry_version > 0) {
        metrics_.gauge("bulwark_model_registry_version", {{"model", name}},
                       static_cast<double>(slot->source.registry_version));
      }
    }
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
  return {"model_repository", "binary_tensor_data", "bulwark_guard", "bulwark_feedback"};
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
  try {
    return tokens->authorize(authorization, role);
  } catch (const Error& e) {
    if (e.kind() == ErrorKind::kUnauthenticated || e.kind() == ErrorKind::kPermissionDenied) note_auth_failure();
    throw;
  }
}

void InferenceCore::note_auth_failure() {
  // Fixed one-minute windows: one audit entry when a window reaches kAuthBurst failures. Two
  // numbers of state, whatever the attacker sends.
  constexpr int kAuthBurst = 20;
  constexpr double kWindowS = 60;
  const double now = unix_now_s();
  int count = 0;
  {
    std::lock_guard<std::mutex> lock(auth_mu_);
    if (now - auth_window_start_ >= kWindowS) {
      auth_window_start_ = now;
      auth_failures_ = 0;
    }
    count = ++auth_failures_;
  }
  if (count == kAuthBurst) {
    source_->audit("serve.auth-failures", "server", {{"failures", count}, {"window_s", kWindowS}}, "serve");
  }
}

std::optional<ResolvedModel> InferenceCore::source_of(const std::string& name) const {
  std::lock_guard<std::mutex> lock(mu_);
  const auto it = slots_.find(name);
  if (it == slots_.end()) return std::nullopt;
  return it->second->source;
}

nlohmann::json InferenceCore::guard_status() {
  return {{"guard", guard_.status(unix_now_s())}, {"controller", control_.status ? control_.status() : nullptr}};
}

nlohmann::json InferenceCore::request_hardening(const std::string& actor) {
  if (!control_.harden) throw not_found("no closed-loop controller runs in this server (start it with `bulwark guard`)");
  return control_.harden(actor);
}

Principal InferenceCore::authorize_repository(const std::string& authorization) {
  auto who = authorize(authorization, Role::kAdmin);
  if (!who.admin) {
    throw Error(ErrorKind::kPermissionDenied,
                "the repository API needs an admin token: start the server with --tokens (no anonymous admin)");
  }
  return who;
}

InferResponse InferenceCore::infer(const InferRequest& r, const std::string& authorization,
                                   const std::string& transport) {
  const auto start = Clock::now();
  const std::string request_id = r.id.empty() ? "bw-" + std::to_string(++request_counter_) : r.id;
  AccessRecord rec;
  Principal who;
  rec.request_id = request_id;
  rec.transport = transport;
  rec.model = r.model;
  rec.version = r.version;
  metrics_.inflight_add(1);
  struct InflightGuard {
    Metrics& m;
    ~InflightGuard() { m.inflight_add(-1); }
  } inflight{metrics_};
  try {
    who = authorize(authorization, Role::kInfer);
    rec.token_id = who.token_id;
    // Query history is attributed to the token; without auth, to the peer address.
    const std::string client = who.token_id != "anonymous" ? "token:" + who.token_id : "peer:" + r.peer;
    guard_.admit(client, unix_now_s());
    if (draining_) throw unavailable("the server is shutting down");
    const auto slot = find(r.model, r.version);  // held until the response is built: hot swap safe
    rec.version = slot->version;
    const auto& spec = slot->model.spec();
    const auto x = to_model_input(r, spec, options_.max_elements);
    check_requested_outputs(r);
    auto result = slot->batcher->submit(x).get();
    // Scores and flags read in plain loops: no ATen kernels on request threads (see guard.h).
    std::vector<uint8_t> flagged;
    const double* score = nullptr;
    at::Tensor scores;
    if (result.scores.defined()) {
      scores = result.scores.contiguous().to(torch::kDouble);  // already so: no copy
      score = scores.data_ptr<double>();
      const double threshold = slot->detectors->combined_threshold();
      for (int64_t i = 0; i < scores.size(0); ++i) flagged.push_back(score[i] > threshold);
    }
    guard_.after_inference(r.model, slot->version, client, request_id, x, result.logits, flagged, unix_now_s());

    InferResponse resp;
    resp.model = r.model;
    resp.version = slot->version;
    resp.id = request_id;
    resp.outputs = build_outputs(r, result.logits, spec);
    if (score) {
      const bool expose = guard_.expose_to(who.admin);
      for (size_t i = 0; i < flagged.size(); ++i) {
        const auto v = static_cast<float>(score[i]);
        const bool flag = flagged[i];
        metrics_.attack_score(r.model, slot->version, v, flag);
        rec.max_score = std::max(rec.max_score, v);
        rec.flagged = rec.flagged || flag;
        if (!expose) continue;
        resp.attack_scores.push_back(v);
        resp.attack_flags.push_back(flag);
      }
      if (expose) resp.scorer = slot->detectors->calibrated() ? "calibrated:" + join(slot->detectors->names())
                                                              : slot->detectors->names().front();
    }
    rec.latency_s = seconds_since(start);
    metrics_.request_success(r.model, slot->version);
    metrics_.request_duration(r.model, slot->version, rec.latency_s);
    metrics_.queue_duration(r.model, slot->version, result.queue_s);
    metrics_.compute_duration(r.model, slot->version, result.compute_s);
    metrics_.batch_size(r.model, slot->version, result.batch_rows);
    access_log_.write(rec);
    return resp;
  } catch (const Error& e) {
    rec.latency_s = seconds_since(start);
    rec.status = http_status(e.kind());
    rec.error = e.what();
    metrics_.request_failure(r.model, rec.version, reason_label(e.kind()));
    access_log_.write(rec);
    throw;
  } catch (const std::exception& e) {
    rec.latency_s = seconds_since(start);
    rec.status = 500;
    rec.error = e.what();
    metrics_.request_failure(r.model, rec.version, "internal");
    access_log_.write(rec);
    throw internal_error(std::string("inference failed: ") + e.what());
  }
}

FeedbackResult InferenceCore::feedback(const std::string& model, const std::string& id,
                                       const std::vector<std::string>& labels) {
  if (id.empty() || id.size() > 256) throw invalid_argument("id must be 1..256 characters");
  if (labels.empty() || labels.size() > 65536) throw invalid_argument("labels: 1..65536 labels per feedback");
  const auto slot = find(model, "");
  std::vector<int64_t> k;
  for (size_t i = 0; i < labels.size(); ++i) k.push_back(parse_label(labels[i], slot->model.spec(), i));
  return guard_.feedback(model, id, k, unix_now_s());
}

std::string InferenceCore::render_metrics() {
  guard_.publish_gauges(unix_now_s());
  return metrics_.render();
}

}  // namespace bulwark::serve
