#include "serve/core.h"

#include <torch/torch.h>

#include <chrono>
#include <set>

#include "core/digest.h"
#include "core/error.h"
#include "model/model.h"
#include "serve/outputs.h"
#include "serve/status.h"

namespace bulwark::serve {

struct InferenceCore::Slot {
  std::string name, version;
  ResolvedModel source;  // where it came from: reference, verified path, registry version
  std::string sha256;    // of the model file as loaded: a reload of the same bytes keeps the slot
  model::Model model;
  std::shared_ptr<const detect::DetectorSet> detectors;  // null: detection off
  std::unique_ptr<DynamicBatcher> batcher;               // declared last: destroyed (drained) first
};

struct InferenceCore::Prepared {
  std::string name, reference;
  std::shared_ptr<Slot> slot;  // null: unchanged, keep what serves
  std::shared_ptr<detect::StreamMonitor> monitor;
};

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

std::string shape_text(at::IntArrayRef dims) {
  std::string s = "[";
  for (size_t i = 0; i < dims.size(); ++i) s += (i ? ", " : "") + std::to_string(dims[i]);
  return s + "]";
}

// The batch thread's work: one forward pass (with features when a detector needs them), its
// output checked against the spec, then every detector on the batch. Returns logits and the
// combined attack score per row.
DynamicBatcher::RunFn batch_runner(model::Model m, std::shared_ptr<const detect::DetectorSet> detectors) {
  return [m, detectors](const at::Tensor& x) {
    torch::NoGradGuard ng;
    detect::Batch b;
    b.x = x;
    if (detectors && detectors->needs_features()) std::tie(b.logits, b.features) = m.logits_and_features(x);
    else b.logits = m.logits(x);
    const int64_t k = m.spec().num_classes();
    if (!b.logits.defined() || b.logits.dim() != 2 || b.logits.size(0) != x.size(0) || b.logits.size(1) != k) {
      throw internal_error("the model answered " + (b.logits.defined() ? shape_text(b.logits.sizes()) : "nothing") +
                           " for " + std::to_string(x.size(0)) + " rows; its spec says [" +
                           std::to_string(x.size(0)) + ", " + std::to_string(k) + "] (" + std::to_string(k) +
                           " classes)");
    }
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

// Model names become metric labels and URL parts: 1..128 bytes of printable ASCII or UTF-8,
// without '/', '?', '#' or spaces.
void check_model_name(const std::string& name) {
  bool ok = !name.empty() && name.size() <= 128 && name.find_first_of("/ ?#") == std::string::npos;
  for (size_t i = 0; ok && i < name.size();) {
    const auto c = static_cast<unsigned char>(name[i]);
    size_t n = 0;
    if (c < 0x20 || c == 0x7F) ok = false;
    else if (c >= 0xC2 && c <= 0xDF) n = 1;
    else if (c >= 0xE0 && c <= 0xEF) n = 2;
    else if (c >= 0xF0 && c <= 0xF4) n = 3;
    else if (c >= 0x80) ok = false;
    for (size_t k = 1; ok && k <= n; ++k) {
      ok = i + k < name.size() && (static_cast<unsigned char>(name[i + k]) & 0xC0) == 0x80;
    }
    i += n + 1;
  }
  if (!ok) {
    throw invalid_argument("model name must be 1..128 characters of UTF-8 without control characters, '/', '?', "
                           "'#' or spaces");
  }
}

}  // namespace

double unix_now_s() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

void CoreOptions::validate() const {
  batching.validate();
  guard.validate();
  if (max_elements < 1) throw invalid_argument("--max-elements must be positive");
  if (request_timeout_ms < 1 || request_timeout_ms > 3'600'000) {
    throw invalid_argument("--request-timeout-ms must be in 1..3600000");
  }
}

InferenceCore::InferenceCore(CoreOptions options)
    : options_(std::move(options)), guard_((options_.validate(), options_.guard), metrics_),
      access_log_(options_.access_log), source_(std::make_unique<ModelSource>(options_.source)) {
  tokens_ = std::make_shared<TokenStore>();
  guard_.set_feedback_possible(false);
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
  std::map<std::string, std::shared_ptr<Slot>> slots;
  {
    std::lock_guard<std::mutex> lock(mu_);
    slots.swap(slots_);
  }
  // Each batcher drains (bounded by --drain-timeout-ms) as its slot goes, outside the lock.
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
  check_model_name(name);
  std::lock_guard<std::mutex> serial(load_mu_);
  bool from_client = from_client_in;
  std::string reference = reference_in;
  if (reference.empty()) {
    std::lock_guard<std::mutex> lock(mu_);
    const auto it = references_.find(name);
    if (it == references_.end()) {
      throw invalid_argument("model '" + name + "' has no known source: give parameters.path over REST, or --model");
    }
    reference = it->second;  // what we stored: a registry reference or an already-confined path
    from_client = false;
  }
  ResolvedModel resolved;
  try {
    resolved = source_->resolve(reference, from_client);
  } catch (const std::exception& e) {
    metrics_.counter("bulwark_model_loads_total", {{"model", name}, {"result", "refused"}});
    source_->audit("serve.load-refused", name, {{"reference", reference}, {"error", e.what()}}, actor);
    throw;
  }
  std::vector<Prepared> one;
  one.push_back(prepare(name, reference, resolved, actor));
  return commit(std::move(one), nullptr, actor).front().version;
}

namespace {

// The SHA-256 of what `resolved` names: a registry version's verified bytes, else the plain file.
std::string content_sha256(const ResolvedModel& resolved) {
  return resolved.model_bytes ? sha256_hex(*resolved.model_bytes) : sha256_file_hex(resolved.path);
}

}  // namespace

InferenceCore::Prepared InferenceCore::prepare(const std::string& name, const std::string& reference,
                                               const ResolvedModel& resolved, const std::string& actor) {
  Prepared p{name, reference, nullptr, nullptr};
  try {
    // A registry version loads from the bytes that were verified, never from its file again.
    auto m = resolved.model_bytes ? model::Model::from_bytes(*resolved.model_bytes, resolved.origin)
                                  : model::Model::load(resolved.path);  // first: its errors name a bad file best
    const std::string sha = content_sha256(resolved);
    auto slot = std::make_shared<Slot>(Slot{name, "", resolved, sha, std::move(m), nullptr, nullptr});
    slot->model.set_training(false);
    slot->model.set_parameters_require_grad(false);
    slot->detectors = guard_.detectors_for(name, slot->model, sha, resolved.calibration, resolved.calibration_bytes.get());
    // Loaded: the slot keeps where the model came from, not a second copy of its bytes.
    slot->source.model_bytes.reset();
    slot->source.calibration_bytes.reset();
    // Warm up (TorchScript profiles the first calls) so the first client does not pay for it;
    // this also checks the model's output against its spec before anyone depends on it.
    auto shape = slot->model.spec().input_shape;
    shape.insert(shape.begin(), 1);
    try {
      batch_runner(slot->model, slot->detectors)(torch::full(shape, slot->model.spec().lo));
    } catch (const Error& e) {
      throw data_format(resolved.path + ": " + e.what());
    }
    slot->batcher = std::make_unique<DynamicBatcher>(options_.batching, batch_runner(slot->model, slot->detectors));
    p.slot = std::move(slot);
  } catch (const std::exception& e) {
    metrics_.counter("bulwark_model_loads_total", {{"model", name}, {"result", "refused"}});
    source_->audit("serve.load-refused", name, {{"reference", reference}, {"error", e.what()}}, actor);
    throw;
  }
  {
    // The version it will have; load_mu_ keeps anyone else from taking the number meanwhile.
    std::lock_guard<std::mutex> lock(mu_);
    const auto it = versions_.find(name);
    p.slot->version = std::to_string((it == versions_.end() ? 0 : it->second) + 1);
  }
  // Slow (thresholds by simulation): before the swap, not after it.
  p.monitor = guard_.make_monitor(name, p.slot->version, p.slot->detectors.get(), p.slot->model.spec().num_classes());
  return p;
}

std::vector<ReloadResult> InferenceCore::commit(std::vector<Prepared> prepared, std::shared_ptr<TokenStore> tokens,
                                                const std::string& actor) {
  std::vector<ReloadResult> results;
  std::vector<std::shared_ptr<Slot>> old;  // released after the lock: their batchers drain then
  std::vector<bool> replacing;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (tokens) {
      tokens_ = std::move(tokens);
      guard_.set_feedback_possible(tokens_->grants(Role::kFeedback));
    }
    for (auto& p : prepared) {
      auto& s = slots_[p.name];
      if (!p.slot) {
        results.push_back({p.name, s->version, false});
        continue;
      }
      versions_[p.name] = std::stoll(p.slot->version);
      references_[p.name] = is_registry_reference(p.reference) ? p.reference : p.slot->source.path;
      replacing.push_back(s != nullptr);
      old.push_back(std::move(s));
      s = p.slot;
      results.push_back({p.name, p.slot->version, true});
    }
  }
  size_t k = 0;
  for (auto& p : prepared) {
    if (!p.slot) continue;
    guard_.model_loaded(p.name, std::move(p.monitor));
    metrics_.counter("bulwark_model_loads_total", {{"model", p.name}, {"result", "ok"}});
    source_->audit(replacing[k++] ? "serve.swap" : "serve.load", p.name,
                   {{"reference", p.reference}, {"origin", p.slot->source.origin},
                    {"served_version", p.slot->version}, {"signed", p.slot->source.is_signed},
                    {"sha256", p.slot->sha256}},
                   actor);
  }
  publish_model_info();
  return results;
}

std::vector<ReloadResult> InferenceCore::reload(std::shared_ptr<TokenStore> tokens,
                                                const std::vector<ModelAssignment>& models) {
  std::set<std::string> names;
  for (const auto& m : models) {
    check_model_name(m.name);
    if (!names.insert(m.name).second) throw invalid_argument("--model: '" + m.name + "' is given twice");
  }
  std::lock_guard<std::mutex> serial(load_mu_);
  std::vector<Prepared> prepared;
  for (const auto& m : models) {
    ResolvedModel resolved;
    try {
      resolved = source_->resolve(m.reference, false);
    } catch (const std::exception& e) {
      source_->audit("serve.load-refused", m.name, {{"reference", m.reference}, {"error", e.what()}}, "operator");
      throw;
    }
    std::shared_ptr<Slot> current;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (const auto it = slots_.find(m.name); it != slots_.end()) current = it->second;
    }
    if (current && current->source.reference == resolved.reference && current->source.path == resolved.path &&
        current->source.calibration == resolved.calibration && current->sha256 == content_sha256(resolved)) {
      prepared.push_back({m.name, m.reference, nullptr, nullptr});  // the same bytes: keep serving them
      continue;
    }
    prepared.push_back(prepare(m.name, m.reference, resolved, "operator"));
  }
  // Everything was built and checked: nothing can fail from here on.
  return commit(std::move(prepared), std::move(tokens), "operator");
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
  std::lock_guard<std::mutex> serial(load_mu_);
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

bool InferenceCore::known_model(const std::string& name) const {
  std::lock_guard<std::mutex> lock(mu_);
  return versions_.count(name) != 0;
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
  guard_.set_feedback_possible(tokens_->grants(Role::kFeedback));
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

void InferenceCore::authenticate(const RequestHead& head, const std::string& authorization,
                                 const std::string& transport) {
  std::shared_ptr<const TokenStore> tokens;
  {
    std::lock_guard<std::mutex> lock(mu_);
    tokens = tokens_;
  }
  try {
    tokens->authenticate(authorization);
  } catch (const Error& e) {
    note_auth_failure();
    if (!head.model.empty()) {
      AccessRecord rec;
      rec.request_id = next_request_id();
      rec.transport = transport;
      rec.model = head.model;
      rec.version = head.version;
      rec.status = http_status(e);
      rec.error = e.what();
      metrics_.request_failure("unknown", "", reason_label(e));
      access_log_.write(rec);
    }
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
  auto source = it->second->source;
  source.serve_version = it->second->version;
  return source;
}

nlohmann::json InferenceCore::guard_status() {
  return {{"guard", guard_.status(unix_now_s())}, {"controller", control_.status ? control_.status() : nullptr}};
}

nlohmann::json InferenceCore::request_hardening(const std::string& actor) {
  if (!control_.harden) throw not_found("no closed-loop controller runs in this server (start it with `bulwark guard`)");
  return control_.harden(actor);
}

nlohmann::json InferenceCore::decide(const std::string& actor, const std::string& decision) {
  if (!control_.decide) throw not_found("no closed-loop controller runs in this server (start it with `bulwark guard`)");
  return control_.decide(actor, decision);
}

Principal InferenceCore::authorize_repository(const std::string& authorization) {
  auto who = authorize(authorization, Role::kAdmin);
  if (!who.admin) {
    throw Error(ErrorKind::kPermissionDenied,
                "the repository API needs an admin token: start the server with --tokens (no anonymous admin)");
  }
  return who;
}

InferResponse InferenceCore::infer(const InferRequest& request, const std::string& authorization,
                                   const std::string& transport) {
  return infer(RequestHead{request.model, request.version, request.peer}, authorization, transport,
               [&request](const BodyLimits&) { return request; });
}

InferResponse InferenceCore::infer(const RequestHead& head, const std::string& authorization,
                                   const std::string& transport, const BodyDecoder& decode) {
  const auto start = Clock::now();
  const auto deadline = start + std::chrono::milliseconds(options_.request_timeout_ms);
  AccessRecord rec;
  Principal who;
  rec.transport = transport;
  rec.model = head.model;
  rec.version = head.version;
  // Metric labels: a model name only once the caller is authenticated and the name is one the
  // server has loaded, the version only when it is the one served; else fixed values. Names a
  // client makes up never become series.
  std::string metric_model = "unknown", metric_version;
  metrics_.inflight_add(1);
  struct InflightGuard {
    Metrics& m;
    ~InflightGuard() { m.inflight_add(-1); }
  } inflight{metrics_};
  try {
    who = authorize(authorization, Role::kInfer);
    rec.token_id = who.token_id;
    if (known_model(head.model)) metric_model = head.model;
    // Query history and alarm evidence are attributed to the token; without one, to the peer's
    // network prefix (guard.h).
    const std::string client = guard_.identity(who.token_id, head.peer);
    guard_.admit(client, unix_now_s());
    if (draining_) throw unavailable("the server is shutting down");
    const auto slot = find(head.model, head.version);  // held until the response is built: hot swap safe
    metric_version = rec.version = slot->version;
    const auto& spec = slot->model.spec();
    const BodyLimits limits{options_.max_elements, options_.batching.max_batch,
                            spec.input_shape[0] * spec.input_shape[1] * spec.input_shape[2]};
    InferRequest r = decode(limits);
    r.model = head.model;
    r.version = head.version;
    r.peer = head.peer;
    rec.request_id = r.id.empty() ? next_request_id() : r.id;
    const auto x = to_model_input(r, spec, options_.max_elements, options_.batching.max_batch);
    check_requested_outputs(r);
    guard_.check_queries(r.model, slot->version, client, x, unix_now_s());  // every row, before the model runs
    auto pending = slot->batcher->submit(x, deadline);
    if (pending.wait_until(deadline) != std::future_status::ready) {
      throw DeadlineExceededError("model '" + head.model + "' did not answer within " +
                                  std::to_string(options_.request_timeout_ms) + " ms (--request-timeout-ms)");
    }
    auto result = pending.get();
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
    // Feedback names the answer by a random id the server issued (never one the client chose,
    // which another client could guess or re-use to overwrite the record).
    InferResponse resp;
    if (guard_.feedback_possible()) resp.feedback_id = random_hex(16);
    guard_.after_inference(r.model, slot->version, client, resp.feedback_id, result.logits, flagged, unix_now_s());

    resp.model = r.model;
    resp.version = slot->version;
    resp.id = r.id.empty() && !resp.feedback_id.empty() ? resp.feedback_id : rec.request_id;
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
  } catch (const std::exception& e) {
    if (rec.request_id.empty()) rec.request_id = next_request_id();
    rec.latency_s = seconds_since(start);
    rec.error = e.what();  // the whole detail, for the operator
    const auto* error = dynamic_cast<const Error*>(&e);
    const bool internal = !error || error->kind() == ErrorKind::kInternal || error->kind() == ErrorKind::kIo;
    rec.status = internal ? 500 : http_status(*error);
    metrics_.request_failure(metric_model, metric_version, internal ? "internal" : reason_label(*error));
    access_log_.write(rec);
    if (!internal) throw;
    // What failed inside the model (LibTorch messages carry stack traces and TorchScript source)
    // stays on the server; the client gets the request id to quote.
    throw internal_error("inference failed: " + internal_error_message(rec.request_id, e.what()));
  }
}

FeedbackResult InferenceCore::feedback(const std::string& model, const std::string& id,
                                       const std::vector<std::string>& labels, const std::string& labeller) {
  if (id.empty() || id.size() > 256) throw invalid_argument("id must be 1..256 characters");
  if (labels.empty() || labels.size() > 65536) throw invalid_argument("labels: 1..65536 labels per feedback");
  const auto slot = find(model, "");
  std::vector<int64_t> k;
  for (size_t i = 0; i < labels.size(); ++i) k.push_back(parse_label(labels[i], slot->model.spec(), i));
  return guard_.feedback(model, id, k, labeller, unix_now_s());
}

std::string InferenceCore::render_metrics(const std::string& authorization) {
  std::shared_ptr<TokenStore> tokens;
  {
    std::lock_guard<std::mutex> lock(mu_);
    tokens = tokens_;
  }
  bool internal = false;
  try {
    internal = tokens->has_role(authorization, Role::kMetrics) || tokens->has_role(authorization, Role::kAdmin);
  } catch (const Error&) {
    note_auth_failure();
    throw;
  }
  guard_.publish_gauges(unix_now_s());
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [name, slot] : slots_) {
      metrics_.gauge("bulwark_queue_rows", {{"model", name}, {"version", slot->version}},
                     static_cast<double>(slot->batcher->admitted_rows()));
    }
  }
  return metrics_.render(internal);
}

}  // namespace bulwark::serve
