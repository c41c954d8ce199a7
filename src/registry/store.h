// registry/store.h — the model registry: models by name, numbered versions with their files
// (content-addressed objects), an OMS signature per version, lineage and metrics, and stages
// (none → staging → production → archived; at most one version per model in staging and one in
// production). Every change is one database transaction together with its audit entry; a version
// is visible only once its objects are durable and its signature is committed.
//
// Thread-safety: a Registry owns one database connection; use it from one thread at a time. Any
// number of processes may open the same registry: on SQLite (one machine) writers serialise on
// the database's lock; on PostgreSQL (many machines sharing the directory) changes to one model
// serialise on its row in `models` (SELECT ... FOR UPDATE) and audit appends on the audit table.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "registry/audit.h"
#include "registry/db.h"
#include "registry/location.h"
#include "registry/objects.h"
#include "registry/signing.h"
#include "registry/stage_statement.h"

namespace bulwark::registry {

enum class Stage { kNone, kStaging, kProduction, kArchived };
std::string to_string(Stage stage);
// Throws invalid_argument naming the stage and the ones that exist.
Stage parse_stage(const std::string& text);

// "fashion", "fashion@3", "fashion@latest", "fashion@production", with or without a "registry:"
// prefix. A bare name means the production version.
struct Reference {
  static constexpr int64_t kLatest = -1;
  std::string model;
  int64_t version = 0;  // 0: by stage; kLatest: the highest version
  Stage stage = Stage::kProduction;
  std::string text() const;
};
Reference parse_reference(const std::string& text);
// Model names: 1..64 of [a-z0-9._-], starting with a letter or digit (they name URLs and files).
void check_model_name(const std::string& name);

struct VersionRecord {
  std::string model;
  int64_t version = 0;
  Stage stage = Stage::kNone;
  std::map<std::string, std::string> files;  // name in the version ("model.pt") -> SHA-256
  std::string bundle;                        // Sigstore bundle JSON; empty when unsigned
  std::string key_id;
  std::optional<int64_t> parent;
  nlohmann::json lineage = nlohmann::json::object();
  nlohmann::json metrics = nlohmann::json::object();
  std::string created, created_by;

  bool is_signed() const { return !bundle.empty(); }
  std::string ref() const { return model + "@" + std::to_string(version); }
  nlohmann::json to_json() const;  // without the bundle
};

struct RegisterRequest {
  std::string model;
  std::map<std::string, std::string> files;  // name in the version -> source file
  std::optional<int64_t> parent;
  nlohmann::json lineage = nlohmann::json::object();  // dataset, dataset_sha256, method, eps, seed, command
  nlohmann::json metrics = nlohmann::json::object();
  // A signature made elsewhere (an OpenSSF model_signing `model.sig` over these files): checked
  // against the trust list and the files instead of signing them. Empty: sign with the given key.
  std::string bundle;
};

// The latest stage statement of a model, its signature checked.
struct SignedStage {
  StageStatement statement;
  std::string sha256;  // of the payload: what the audit entry records
  std::string key_id;  // empty when unsigned (--allow-unsigned registries only)
};

class Registry {
 public:
  // `location` is a directory or a postgresql:// URL with ?dir= (registry/location.h). Creates the
  // directory's objects/, trust/ and the audit log's key (log.key 0600, log.pub), and the database
  // (<dir>/registry.db, or the tables in the PostgreSQL database); refuses a location that already
  // holds a registry.
  static void init(const std::string& location);
  // Opens an initialised registry; throws not_found naming what is missing (unavailable when
  // PostgreSQL cannot be reached). `actor` goes into every audit entry this handle writes.
  // `allow_unsigned` lets register, promote and verify accept unsigned versions (development
  // only; audited as such).
  // `access`: kReadOnly opens a SQLite registry without writing to it (a read-only mount: a
  // server's registry volume); every write, the audit entries included, is then refused.
  enum class Access { kReadWrite, kReadOnly };
  Registry(const std::string& location, std::string actor, bool allow_unsigned = false,
           Access access = Access::kReadWrite);
  ~Registry();
  Registry(Registry&&) noexcept;

  // The registry directory: objects, trust list, log key and checkpoint (shared, on PostgreSQL).
  const std::string& dir() const { return location_.dir; }
  // The location as given, any password masked: for messages.
  const std::string& location() const { return location_.display; }
  Backend backend() const { return location_.backend; }
  bool allow_unsigned() const { return allow_unsigned_; }
  bool read_only() const { return access_ == Access::kReadOnly; }

  // Trust roots from outside the registry directory (a server's --trust-keys and --log-key, a
  // read-only mount or a Kubernetes Secret): from here on, signatures are checked against `keys`
  // instead of <dir>/trust, and the audit log against `log_key_pem` (empty: <dir>/log.pub).
  void pin_trust(TrustList keys, const std::string& log_key_pem);
  // A directory of published checkpoints (audit checkpoint --publish): check_stage_audited then
  // also requires the log to be consistent with every one of them (a rolled-back log is refused).
  void set_witness(std::string dir) { witness_dir_ = std::move(dir); }
  bool trust_pinned() const { return pinned_trust_.has_value(); }
  // The key that signs this handle's stage statements (promote, rollback). Without one, stage
  // changes are recorded unsigned, and servers refuse to follow them unless --allow-unsigned.
  void set_operator_key(std::shared_ptr<const SigningKey> key) { operator_key_ = std::move(key); }

  // Stores the files, signs them with `key` (null: unsigned, refused unless allow_unsigned) or
  // checks request.bundle, and adds version N+1 in stage none.
  VersionRecord register_version(const RegisterRequest& request, const SigningKey* key);
  // Verifies the version, then moves it to `stage`; the version that held staging or production
  // before is archived.
  VersionRecord promote(const std::string& model, int64_t version, Stage stage);
  // Production goes back to `to`, or else to the version that was in production before the
  // current one; the current one is archived. Verifies the target first.
  VersionRecord rollback(const std::string& model, std::optional<int64_t> to = std::nullopt);

  std::vector<std::string> models() const;
  std::vector<VersionRecord> versions(const std::string& model) const;
  // Throws not_found naming the model, the version, or the empty stage. Stages as the database's
  // `versions.stage` column says: for listings. What to serve comes from resolve_signed.
  VersionRecord resolve(const Reference& ref) const;
  // The model's latest stage statement (highest counter), its signature checked against the trust
  // roots, its registry and model and counter against the row. Throws SignatureError ("unsigned",
  // "untrusted-key", "signature", "stage-statement") or not_found (no statement: stages set before
  // signed stage changes, or only by SQL).
  SignedStage latest_stage(const std::string& model);
  // The version `stage` holds by the latest signed statement, its file list equal to the one the
  // statement names. Throws as latest_stage, and SignatureError "stage-statement" when the version's
  // files differ or the stage is empty by the statement.
  VersionRecord resolve_signed(const std::string& model, Stage stage, SignedStage* statement = nullptr);
  // Throws SignatureError "audit" unless the audit log verifies (against the pinned log key when
  // pinned) and records `stage` in an entry covered by a checkpoint or signed by the log key.
  void check_stage_audited(const SignedStage& stage);
  // Checks the signature against the trust list and every object's digest; returns the verified
  // object paths by file name. Failures are audited ("registry.verify-failed") and rethrown.
  std::map<std::string, std::string> verify(const VersionRecord& version);
  // The same checks on each object read once into memory: the bytes returned (name -> bytes) are
  // the ones hashed, so a file swapped on disk after the check is never what the caller loads.
  std::map<std::string, std::string> read_verified(const VersionRecord& version);
  ObjectStore::GcResult gc(bool dry_run);

  TrustList trust() const;  // the pinned keys, else <dir>/trust/*.pub
  const ObjectStore& objects() const { return objects_; }
  // Adds or removes a trusted public key (file copied into trust/ as <key id>.pub); audited.
  std::string trust_key(const std::string& public_pem_path);
  void untrust_key(const std::string& key_id);

  // An audit entry in its own transaction, then a fresh checkpoint: for actions that change
  // nothing else here (serve's model loads, the loop's transitions).
  // `actor` empty: this handle's actor.
  AuditEntry record(const std::string& action, const std::string& subject, const nlohmann::json& details,
                    const std::string& actor = "");
  AuditLog& audit() { return *audit_; }
  Database& db() { return *db_; }
  const std::string& actor() const { return actor_; }

 private:
  VersionRecord set_stage(const VersionRecord& v, Stage stage, const std::string& action, const nlohmann::json& extra);
  void checkpoint();

  RegistryLocation location_;
  std::string actor_;
  bool allow_unsigned_ = false;
  Access access_ = Access::kReadWrite;
  ObjectStore objects_;  // before the database: a registry without its objects directory is refused untouched
  std::unique_ptr<Database> db_;
  std::unique_ptr<AuditLog> audit_;
  std::optional<TrustList> pinned_trust_;
  std::string witness_dir_;
  std::shared_ptr<const SigningKey> operator_key_;
};

// Keys from a .pub file or a directory of them (the --trust-keys flag); throws naming the path.
TrustList load_trust_roots(const std::string& path);

}  // namespace bulwark::registry
