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
  Registry(const std::string& location, std::string actor, bool allow_unsigned = false);
  ~Registry();
  Registry(Registry&&) noexcept;

  // The registry directory: objects, trust list, log key and checkpoint (shared, on PostgreSQL).
  const std::string& dir() const { return location_.dir; }
  // The location as given, any password masked: for messages.
  const std::string& location() const { return location_.display; }
  Backend backend() const { return location_.backend; }
  bool allow_unsigned() const { return allow_unsigned_; }

  // Stores the files, signs them with `key` (null: unsigned, refused unless allow_unsigned) and
  // adds version N+1 in stage none.
  VersionRecord register_version(const RegisterRequest& request, const SigningKey* key);
  // Verifies the version, then moves it to `stage`; the version that held staging or production
  // before is archived.
  VersionRecord promote(const std::string& model, int64_t version, Stage stage);
  // Production goes back to `to`, or else to the version that was in production before the
  // current one; the current one is archived. Verifies the target first.
  VersionRecord rollback(const std::string& model, std::optional<int64_t> to = std::nullopt);

  std::vector<std::string> models() const;
  std::vector<VersionRecord> versions(const std::string& model) const;
  // Throws not_found naming the model, the version, or the empty stage.
  VersionRecord resolve(const Reference& ref) const;
  // Checks the signature against the trust list and every object's digest; returns the verified
  // object paths by file name. Failures are audited ("registry.verify-failed") and rethrown.
  std::map<std::string, std::string> verify(const VersionRecord& version);
  // The same checks on each object read once into memory: the bytes returned (name -> bytes) are
  // the ones hashed, so a file swapped on disk after the check is never what the caller loads.
  std::map<std::string, std::string> read_verified(const VersionRecord& version);
  ObjectStore::GcResult gc(bool dry_run);

  TrustList trust() const;  // <dir>/trust/*.pub
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
  ObjectStore objects_;  // before the database: a registry without its objects directory is refused untouched
  std::unique_ptr<Database> db_;
  std::unique_ptr<AuditLog> audit_;
};

}  // namespace bulwark::registry
