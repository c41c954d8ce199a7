// serve/core.h — the inference core both frontends share: the model slots (hot swap) and the
// request path, in stages that each live in their own file:
//   auth (auth.h) -> guard admission (guard.h) -> the body, decoded by the frontend only now, to
//   limits from the model's spec -> validation (validate.h) -> batching and the detectors on the
//   batch thread (batcher.h), under the request's deadline -> guard bookkeeping (guard.h) ->
//   output shaping (outputs.h) -> metrics (metrics.h) and the access log (access_log.h).
// Frontends translate their wire format to InferRequest and map Error kinds to status.
//
// Thread-safety: every public method may be called from any thread. A model slot is a
// shared_ptr swapped under a mutex: a request holds the model it started on until it finishes, so
// a swap or unload never fails a request in flight and new requests see the new model at once.
// Loads, reloads and unloads are serialized among themselves (load_mu_), never with requests.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "serve/access_log.h"
#include "serve/auth.h"
#include "serve/batcher.h"
#include "serve/guard.h"
#include "serve/metrics.h"
#include "serve/model_source.h"
#include "serve/types.h"
#include "serve/validate.h"

namespace bulwark::serve {

struct CoreOptions {
  BatcherOptions batching;
  GuardOptions guard;             // detectors, query-similarity detection, monitor, feedback
  ModelSourceOptions source;      // registry, model root, --allow-unsigned
  int64_t max_elements = 1 << 24;  // per input tensor
  int64_t request_timeout_ms = 30000;  // admission to answer; past it 504 / DEADLINE_EXCEEDED
  std::string access_log = "-";    // JSON lines: a file, "-" = stderr, "off"

  void validate() const;  // throws invalid_argument naming the flag
};

// What a frontend knows of an inference request before it reads the body.
struct RequestHead {
  std::string model, version;  // from the URL or the message; empty version = the one served
  std::string peer;            // the transport's peer address
};

// What a body may hold, known once the caller is authenticated and the model found.
struct BodyLimits {
  int64_t max_elements = 0;    // per tensor (--max-elements)
  int64_t max_rows = 0;        // rows per request (--max-batch)
  int64_t values_per_row = 0;  // the model's C*H*W
};

// Reads the body into a request (its model, version and peer are the head's).
using BodyDecoder = std::function<InferRequest(const BodyLimits&)>;

// One model of a reload: the name and the reference it is served from.
struct ModelAssignment {
  std::string name, reference;
};
struct ReloadResult {
  std::string name, version;
  bool changed = false;  // false: the same bytes were already serving; the version stayed
};

class InferenceCore {
 public:
  explicit InferenceCore(CoreOptions options);
  ~InferenceCore();

  // Model control (Triton's model-repository extension). load_model swaps atomically and returns
  // the new version (a registry version's own number; for a plain file "1", "2", ... per name); a refused reference (unsigned, failed verification),
  // a bad file, a model whose output does not match its spec or a calibration made for another
  // model throws and leaves the old model serving.
  // `reference` is registry:NAME@STAGE|N or a file (model_source.h); empty reloads the last one.
  // A stage reference is followed: when the stage moves, the new version is verified and swapped
  // in within source.follow_interval_ms. With a registry, loads, swaps and refusals are audited.
  std::string load_model(const std::string& name, const std::string& reference);
  // The repository API's load: plain paths only under the model root; audited as `who`.
  std::string load_model_for_client(const std::string& name, const std::string& reference, const Principal& who);
  // SIGHUP (and start): tokens (null = keep the current ones) and models, as one change. Every
  // model whose source changed is resolved, verified, loaded and warmed first; if anything fails
  // this throws and nothing changed. Then the tokens and every changed model go live under one
  // lock. A model whose reference still resolves to the same bytes keeps serving, version and all.
  std::vector<ReloadResult> reload(std::shared_ptr<TokenStore> tokens, const std::vector<ModelAssignment>& models);
  void unload_model(const std::string& name);
  std::vector<RepositoryEntry> index() const;

  bool live() const { return true; }
  bool ready() const;  // not draining and at least one model loaded
  bool model_ready(const std::string& name, const std::string& version) const;
  ModelMetadata model_metadata(const std::string& name, const std::string& version) const;
  std::vector<std::string> extensions() const;

  // Runs the request path above; records metrics and one access-log line whatever happens.
  // The body is decoded (by `decode`) only after the caller is authenticated and the model
  // found, to limits from the model's spec. Throws Error (RateLimitedError for 429,
  // DeadlineExceededError for 504); an internal failure reaches the client as a message naming
  // the request id only, its detail the access log and stderr.
  InferResponse infer(const RequestHead& head, const std::string& authorization, const std::string& transport,
                      const BodyDecoder& decode);
  // The same for a request decoded already (in-process callers).
  InferResponse infer(const InferRequest& request, const std::string& authorization, const std::string& transport);
  // Labels (class names or indices) for an earlier request's rows. The frontend authorizes role
  // feedback first, before it parses the body. Throws not_found naming an unknown or expired id.
  // `labeller` is the feedback token's id: the watch counts distinct labellers.
  FeedbackResult feedback(const std::string& model, const std::string& id, const std::vector<std::string>& labels,
                          const std::string& labeller);
  // For non-inference endpoints: throws like infer's authentication.
  Principal authorize(const std::string& authorization, Role role);
  // Before a frontend reads a request's body: throws kUnauthenticated unless the header names a
  // known token (roles and rates are the route's to check). A refused inference request (`head`
  // names a model) is counted and logged as infer would, under the model label `unknown`.
  void authenticate(const RequestHead& head, const std::string& authorization, const std::string& transport);
  // The repository API (index, load, unload): an authenticated admin token; with authentication
  // off nobody is admin, so it is refused (no anonymous admin).
  Principal authorize_repository(const std::string& authorization);
  void set_tokens(std::shared_ptr<TokenStore> tokens);

  // An audit entry (no-op without a registry), e.g. serve.reload from the signal handler.
  void audit(const std::string& action, const std::string& subject, const nlohmann::json& details) {
    source_->audit(action, subject, details, "operator");
  }

  // Where the model `name` now being served came from (registry version, signed...); nullopt when
  // it is not loaded.
  std::optional<ResolvedModel> source_of(const std::string& name) const;

  // The closed loop's controller, when one runs in this process (`bulwark guard`): GET /v2/guard
  // reports its status and POST /v2/guard/harden asks it to harden now. Set before serving starts.
  struct ControlHooks {
    std::function<nlohmann::json()> status;
    std::function<nlohmann::json(const std::string& actor)> harden;
    std::function<nlohmann::json(const std::string& actor, const std::string& decision)> decide;
  };
  void set_control(ControlHooks hooks) { control_ = std::move(hooks); }
  // {"guard": detectors, monitors and recent events, "controller": ... or null}.
  nlohmann::json guard_status();
  nlohmann::json request_hardening(const std::string& actor);
  // POST /v2/guard/decide: an admin keeps or rolls back a held candidate.
  nlohmann::json decide(const std::string& actor, const std::string& decision);

  // After this, ready() is false; requests already admitted finish (each within
  // request_timeout_ms; a model still stuck after batching.drain_timeout_ms is left behind when
  // the core goes).
  void begin_drain() { draining_ = true; }
  Metrics& metrics() { return metrics_; }
  // /metrics: the counters plus the guard's gauges as of now. The detectors' and the loop's series
  // (per-input scores, stateful hits, monitor statistics and thresholds, loop state) only for a
  // token with the 'metrics' or 'admin' role: from them anyone could read each hidden flag. An
  // unknown token is refused (kUnauthenticated); no token gets the public series.
  std::string render_metrics(const std::string& authorization = "");
  Guard& guard() { return guard_; }
  const CoreOptions& options() const { return options_; }

 private:
  struct Slot;
  struct Prepared;  // a model built and warmed, not yet serving
  std::shared_ptr<Slot> find(const std::string& name, const std::string& version) const;
  bool known_model(const std::string& name) const;  // ever loaded: safe as a metric label
  std::string load(const std::string& name, const std::string& reference, bool from_client, const std::string& actor);
  Prepared prepare(const std::string& name, const std::string& reference, const ResolvedModel& resolved,
                   const std::string& actor);
  std::vector<ReloadResult> commit(std::vector<Prepared> prepared, std::shared_ptr<TokenStore> tokens,
                                   const std::string& actor);
  void publish_model_info();
  void follow_stages();  // the follower thread's loop
  void note_auth_failure();  // audits a burst of failed authentications
  std::string next_request_id() { return "bw-" + std::to_string(++request_counter_); }

  const CoreOptions options_;
  Metrics metrics_;
  Guard guard_;
  AccessLog access_log_;
  std::mutex load_mu_;                                  // serializes load, reload and unload
  mutable std::mutex mu_;                               // guards slots_, versions_, references_, tokens_
  std::map<std::string, std::shared_ptr<Slot>> slots_;  // name -> model being served
  struct Versions {
    int64_t highest = 0;  // the highest number served under the name: a plain file gets the next
    std::string last;     // the version served last (the repository index of an unloaded model)
  };
  std::map<std::string, Versions> versions_;  // name -> its versions so far
  std::map<std::string, std::string> references_;       // name -> reference last loaded
  std::shared_ptr<TokenStore> tokens_;
  std::atomic<bool> draining_{false};
  std::atomic<uint64_t> request_counter_{0};
  std::unique_ptr<ModelSource> source_;
  // The stage follower: its own thread, woken every follow_interval_ms (or to stop).
  std::thread follower_;
  std::mutex follow_mu_;
  std::condition_variable follow_cv_;
  bool follow_stop_ = false;
  std::map<std::string, int64_t> refused_version_;  // follower thread only
  ControlHooks control_;
  std::mutex auth_mu_;  // guards the two below
  double auth_window_start_ = 0;
  int auth_failures_ = 0;
};

// Seconds since the Unix epoch: the guard's clock (events carry it).
double unix_now_s();

}  // namespace bulwark::serve
