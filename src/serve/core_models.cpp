// serve/core_models.cpp — the model lifecycle of InferenceCore: load (resolve, verify, build the
// slot and its monitor off the serving path), commit (swap under the lock, audit), reload on
// SIGHUP, follow registry stages, unload. The request path is in core.cpp.
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <set>

#include "core/digest.h"
#include "core/error.h"
#include "model/model.h"
#include "serve/core.h"
#include "serve/detail/core_slot.h"

namespace bulwark::serve {
namespace {

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
    // The version it will have: a registry version keeps its registry number, so metrics, V2
    // metadata, events and the report name it as the registry does; a plain file gets the next
    // number after any served under the name. load_mu_ keeps anyone else from taking it meanwhile.
    std::lock_guard<std::mutex> lock(mu_);
    const auto it = versions_.find(name);
    const int64_t next = (it == versions_.end() ? 0 : it->second.highest) + 1;
    p.slot->version = std::to_string(resolved.registry_version > 0 ? resolved.registry_version : next);
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
      auto& seen = versions_[p.name];
      seen.highest = std::max<int64_t>(seen.highest, std::stoll(p.slot->version));
      seen.last = p.slot->version;
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

}  // namespace bulwark::serve
