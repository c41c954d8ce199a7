// serve/model_source.h — where the server's models come from, and what it refuses to load.
//
// A model reference is either `registry:NAME@STAGE` / `registry:NAME@N` (resolved in the
// registry, its signature and digests verified before a byte is loaded) or a plain file path.
// Plain files are unsigned, so they load only with --allow-unsigned (development); a client of the
// repository API may name one only as a relative path under --model-root (no "..", no symlink
// out of the root), never an arbitrary path. With a registry, every load, swap, refusal and
// reload is an audit entry.
//
// Thread-safety: every method may be called from any thread (one registry connection, under a
// mutex).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include <nlohmann/json.hpp>

namespace bulwark::registry {
class Registry;
struct SignedStage;
}

namespace bulwark::serve {

struct ResolvedModel;

struct ModelSourceOptions {
  std::string registry;     // registry directory; empty: registry references are refused
  // Trust roots, required with a registry and kept outside it (a read-only mount, a Secret): the
  // public keys whose model signatures and stage statements this server accepts (a .pub file or a
  // directory of them), and the audit log's public key.
  std::string trust_keys;
  std::string log_key;
  std::string audit_witness;  // published checkpoints the audit log must be consistent with; empty: none
  std::string model_root;   // directory clients may load plain files from; empty: none
  bool allow_unsigned = false;
  int follow_interval_ms = 500;  // how often stage references are re-resolved (hot swap)
  // Tests only: runs after a registry version is verified, before anything is loaded from it (where
  // an attacker with write access to the object store would swap a file).
  std::function<void(const ResolvedModel&)> after_verify_for_tests;

  void validate() const;  // throws invalid_argument naming the flag
};

struct ResolvedModel {
  std::string path;         // the file to load (verified when signed)
  // A registry version's model.pt as read once and verified: load these bytes, not `path`, which
  // anyone with write access to the object store could have changed since.
  std::shared_ptr<const std::string> model_bytes;
  std::shared_ptr<const std::string> calibration_bytes;  // likewise model.detect, when the version has one
  std::string calibration;  // the version's own detector calibration, or empty
  std::string reference;    // what was asked for, e.g. "registry:fashion@production"
  std::string origin;       // what it resolved to, e.g. "registry:fashion@3" or "file:/abs/m.pt"
  int64_t registry_version = 0;  // 0: not from the registry
  bool by_stage = false;         // follows a stage: re-resolved every follow_interval_ms
  bool is_signed = false;
  std::string serve_version;  // set by InferenceCore::source_of: the version now serving (the registry version
                              // for a registry model, the server's own counter for a plain file)
};

class ModelSource {
 public:
  explicit ModelSource(ModelSourceOptions options);
  ~ModelSource();

  // `from_client`: the repository API, where plain paths are confined to the model root. Throws
  // (and audits) when the reference is unknown, unsigned without --allow-unsigned, or fails
  // verification — the error says which check.
  ResolvedModel resolve(const std::string& reference, bool from_client);
  // The registry version a stage reference points to now; 0 for anything else.
  int64_t current_version(const std::string& reference);
  // An audit entry when a registry is configured; a no-op otherwise. Never throws.
  void audit(const std::string& action, const std::string& subject, const nlohmann::json& details,
             const std::string& actor);

  const ModelSourceOptions& options() const { return options_; }

 private:
  ResolvedModel resolve_file(const std::string& path, bool from_client);
  void audit_locked(const std::string& action, const std::string& subject, const nlohmann::json& details,
                    const std::string& actor);
  // What a stage reference was last seen to hold, by reference: a statement counter that goes
  // back, or a lower version that is not a signed rollback, is refused.
  struct Followed {
    int64_t counter = 0;
    int64_t version = 0;
    std::string sha256;   // of the statement followed
    std::string refused;  // the last refusal, audited once
  };
  // Throws when `stage` may not replace what `f` holds.
  static void check_follow(const Followed& f, const registry::SignedStage& stage, int64_t version);
  const ModelSourceOptions options_;
  std::mutex mu_;
  std::unique_ptr<registry::Registry> registry_;
  std::map<std::string, Followed> followed_;
};

bool is_registry_reference(const std::string& reference);

}  // namespace bulwark::serve
