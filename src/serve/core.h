// serve/core.h — the inference core both frontends share: the model slots (hot swap), dynamic
// batching, input validation against each model's spec, the guard scorer, auth, metrics and the
// access log. Frontends translate their wire format to InferRequest and map Error kinds to status.
//
// Thread-safety: every public method may be called from any thread. A model slot is a
// shared_ptr swapped under a mutex: a request holds the model it started on until it finishes, so
// a swap or unload never fails a request in flight and new requests see the new model at once.
#pragma once

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "serve/auth.h"
#include "serve/batcher.h"
#include "serve/metrics.h"
#include "serve/scorer.h"
#include "serve/types.h"

namespace bulwark::serve {

struct CoreOptions {
  BatcherOptions batching;
  std::string guard = "max-softmax";  // scorer name, or "none"
  double guard_threshold = 0.5;        // flag inputs scoring above this
  int64_t max_elements = 1 << 24;      // per input tensor
  std::string access_log = "-";        // JSON lines: a file, "-" = stderr, "off"

  void validate() const;  // throws invalid_argument naming the flag
};

// Element count of a tensor shape, validated (1..8 dims, each >= 1, product <= max_elements);
// errors name `where`. Decoders call it before allocating anything.
int64_t checked_element_count(const std::vector<int64_t>& shape, int64_t max_elements, const std::string& where);

class InferenceCore {
 public:
  explicit InferenceCore(CoreOptions options);
  ~InferenceCore();

  // Model control (Triton's model-repository extension). load_model swaps atomically and returns
  // the new version ("1", "2", ... per name); a bad file throws and leaves the old model serving.
  // An empty path reloads from the path the model was last loaded from.
  std::string load_model(const std::string& name, const std::string& path);
  void unload_model(const std::string& name);
  std::vector<RepositoryEntry> index() const;

  bool live() const { return true; }
  bool ready() const;  // not draining and at least one model loaded
  bool model_ready(const std::string& name, const std::string& version) const;
  ModelMetadata model_metadata(const std::string& name, const std::string& version) const;
  std::vector<std::string> extensions() const;

  // Authenticates (role infer), validates, batches, scores; records metrics and one access-log
  // line whatever happens. Throws Error (RateLimitedError for 429).
  InferResponse infer(const InferRequest& request, const std::string& authorization, const std::string& transport);
  // For non-inference endpoints: throws like infer's authentication.
  Principal authorize(const std::string& authorization, Role role);
  void set_tokens(std::shared_ptr<TokenStore> tokens);

  // After this, ready() is false; requests already admitted finish.
  void begin_drain() { draining_ = true; }
  Metrics& metrics() { return metrics_; }
  const CoreOptions& options() const { return options_; }

 private:
  struct Slot;
  std::shared_ptr<Slot> find(const std::string& name, const std::string& version) const;
  void publish_model_info();
  void log_access(const std::string& request_id, const Principal& who, const std::string& transport,
                  const std::string& model, const std::string& version, double latency_s, int status,
                  const std::string& error, const InferResponse* response);

  const CoreOptions options_;
  std::shared_ptr<const Scorer> scorer_;
  Metrics metrics_;
  mutable std::mutex mu_;                               // guards slots_, versions_, tokens_
  std::map<std::string, std::shared_ptr<Slot>> slots_;  // name -> model being served
  std::map<std::string, int64_t> versions_;             // name -> last version number handed out
  std::map<std::string, std::string> paths_;            // name -> file last loaded
  std::shared_ptr<TokenStore> tokens_;
  std::atomic<bool> draining_{false};
  std::atomic<uint64_t> request_counter_{0};
  std::mutex log_mu_;
  FILE* log_ = nullptr;
  bool own_log_ = false;
};

}  // namespace bulwark::serve
