#include "serve/core.h"

#include <torch/torch.h>

#include <chrono>
#include <set>

#include "core/digest.h"
#include "core/error.h"
#include "model/model.h"
#include "serve/outputs.h"
#include "serve/detail/core_slot.h"
#include "serve/detail/request_stages.h"
#include "serve/status.h"

namespace bulwark::serve {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

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

std::vector<RepositoryEntry> InferenceCore::index() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<RepositoryEntry> out;
  for (const auto& [name, seen] : versions_) {
    const auto it = slots_.find(name);
    if (it != slots_.end()) out.push_back({name, it->second->version, "READY", ""});
    else out.push_back({name, seen.last, "UNAVAILABLE", "unloaded"});
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
    // admit: who asks, whether they may now, and the slot that answers.
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
    // decode: the body, read only now, into the model's input.
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
    // batch: the client's query history first (every row, before the model runs), then the batcher.
    guard_.check_queries(r.model, slot->version, client, x, unix_now_s());
    auto pending = slot->batcher->submit(x, deadline);
    if (pending.wait_until(deadline) != std::future_status::ready) {
      throw DeadlineExceededError("model '" + head.model + "' did not answer within " +
                                  std::to_string(options_.request_timeout_ms) + " ms (--request-timeout-ms)");
    }
    const auto result = pending.get();
    // score: the rows' flags against the calibrated threshold.
    const auto scored = detail::score_rows(
        result.scores, result.scores.defined() ? slot->detectors->combined_threshold() : 0.0);
    // respond. Feedback names the answer by a random id the server issued (never one the client
    // chose, which another client could guess or re-use to overwrite the record).
    // The answers, before they are sent: a client they make blocked or throttled gets none of them.
    guard_.check_answers(r.model, slot->version, client, x, result.logits, unix_now_s());
    InferResponse resp;
    if (guard_.feedback_possible()) resp.feedback_id = random_hex(16);
    guard_.after_inference(r.model, slot->version, client, resp.feedback_id, result.logits, scored.flagged, unix_now_s());
    resp.model = r.model;
    resp.version = slot->version;
    resp.id = r.id.empty() && !resp.feedback_id.empty() ? resp.feedback_id : rec.request_id;
    resp.outputs = build_outputs(r, result.logits, spec);
    if (scored.on()) {
      // The scorer's name is built only for a caller who sees the scores (not on every request).
      const bool expose = guard_.expose_to(who.admin);
      const std::string scorer = !expose ? std::string()
                                 : slot->detectors->calibrated() ? "calibrated:" + join(slot->detectors->names())
                                                                 : slot->detectors->names().front();
      detail::attach_scores(scored, expose, scorer, r.model, slot->version, metrics_, resp, rec);
    }
    // record.
    detail::record_success(r.model, slot->version, result, seconds_since(start), metrics_, access_log_, rec);
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
