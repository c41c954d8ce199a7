#include "registry/store.h"

#include <sys/stat.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <iostream>
#include <random>

#include "core/digest.h"
#include "core/error.h"
#include "core/files.h"
#include "registry/db.h"

namespace bulwark::registry {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

void check_file_name(const std::string& name) {
  if (name.empty() || name.size() > 128 || name == "." || name == ".." ||
      name.find_first_of("/\\\n\r\t ") != std::string::npos) {
    throw invalid_argument("file name '" + name + "' in a version must be 1..128 characters without '/' or spaces");
  }
}

VersionRecord read_version(const Row& r) {
  VersionRecord v;
  v.model = r.text(0);
  v.version = r.int64(1);
  v.stage = parse_stage(r.text(2));
  const json files = json::parse(r.text(3));  // named: items() must not outlive it
  for (const auto& [name, sha] : files.items()) v.files[name] = sha.get<std::string>();
  if (!r.is_null(4)) v.bundle = r.text(4);
  if (!r.is_null(5)) v.key_id = r.text(5);
  if (!r.is_null(6)) v.parent = r.int64(6);
  v.lineage = json::parse(r.text(7));
  v.metrics = json::parse(r.text(8));
  v.created = r.text(9);
  v.created_by = r.text(10);
  return v;
}

constexpr const char* kVersionColumns =
    "SELECT model, version, stage, files, bundle, key_id, parent, lineage, metrics, created, created_by FROM versions ";

void insert_stage_change(Database& db, const std::string& model, int64_t version, Stage from, Stage to,
                         const std::string& actor) {
  db.execute("INSERT INTO stage_changes(model, version, from_stage, to_stage, time, actor) VALUES(?,?,?,?,?,?)",
             {model, version, to_string(from), to_string(to), utc_timestamp(), actor});
}

void update_stage(Database& db, const std::string& model, int64_t version, Stage stage) {
  db.execute("UPDATE versions SET stage = ? WHERE model = ? AND version = ?", {to_string(stage), model, version});
}

// Inside a write transaction: from here to its end no other transaction changes `model`'s versions
// or stages (PostgreSQL: its row in models, FOR UPDATE; SQLite: the write lock already held).
void lock_model(Database& db, const std::string& model) {
  db.lock_rows("SELECT name FROM models WHERE name = ?", {model});
}

}  // namespace

std::string to_string(Stage stage) {
  switch (stage) {
    case Stage::kNone: return "none";
    case Stage::kStaging: return "staging";
    case Stage::kProduction: return "production";
    case Stage::kArchived: return "archived";
  }
  return "none";
}

Stage parse_stage(const std::string& text) {
  if (text == "none") return Stage::kNone;
  if (text == "staging") return Stage::kStaging;
  if (text == "production") return Stage::kProduction;
  if (text == "archived") return Stage::kArchived;
  throw invalid_argument("unknown stage '" + text + "': expected none, staging, production or archived");
}

void check_model_name(const std::string& name) {
  bool ok = !name.empty() && name.size() <= 64 && std::isalnum(static_cast<unsigned char>(name[0]));
  for (const char c : name) {
    ok = ok && ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-');
  }
  if (!ok) throw invalid_argument("model name '" + name + "' must be 1..64 of [a-z0-9._-], starting with a letter or digit");
}

std::string Reference::text() const {
  return model + "@" + (version == kLatest ? "latest" : version > 0 ? std::to_string(version) : to_string(stage));
}

Reference parse_reference(const std::string& text_in) {
  std::string text = text_in;
  if (text.rfind("registry:", 0) == 0) text = text.substr(9);
  Reference ref;
  const auto at = text.find('@');
  ref.model = text.substr(0, at);
  check_model_name(ref.model);
  if (at == std::string::npos) return ref;
  const std::string tail = text.substr(at + 1);
  if (tail == "latest") {
    ref.version = Reference::kLatest;
  } else if (!tail.empty() && tail.find_first_not_of("0123456789") == std::string::npos) {
    if (tail.size() > 12 || std::stoll(tail) < 1) throw invalid_argument("version '" + tail + "' in '" + text_in + "' must be 1 or more");
    ref.version = std::stoll(tail);
  } else {
    ref.stage = parse_stage(tail);
  }
  return ref;
}

json VersionRecord::to_json() const {
  json j{{"model", model},       {"version", version}, {"stage", to_string(stage)}, {"files", files},
         {"signed", is_signed()}, {"key_id", key_id},   {"lineage", lineage},        {"metrics", metrics},
         {"created", created},   {"created_by", created_by}};
  j["parent"] = parent ? json(*parent) : json(nullptr);
  return j;
}

namespace {

bool holds_registry(Database& db) { return !db.query("SELECT value FROM meta WHERE key = 'origin'").empty(); }

// Made before init writes anything: the directory is not already a registry's.
void refuse_existing(const RegistryLocation& loc) {
  const std::string& dir = loc.dir;
  if (file_exists(dir + "/registry.db")) throw invalid_argument(dir + " already holds a registry (registry.db exists)");
  if (loc.backend == Backend::kPostgres && file_exists(dir + "/audit.checkpoint")) {
    throw invalid_argument(dir + " already holds a registry's audit checkpoint: give PostgreSQL a new or empty "
                           "directory");
  }
}

}  // namespace

void Registry::init(const std::string& location) {
  const RegistryLocation loc = parse_location(location);
  const std::string& dir = loc.dir;
  refuse_existing(loc);
  std::unique_ptr<Database> db;
  if (loc.backend == Backend::kPostgres) {
    db = open_database(loc, true);  // the tables, if missing; a registry already there is refused next
    if (holds_registry(*db)) {
      throw invalid_argument(loc.display + " already holds a registry (its meta table has an origin)");
    }
  }
  fs::create_directories(dir);
  ::chmod(dir.c_str(), 0700);
  ObjectStore::create(dir);
  fs::create_directories(dir + "/trust");
  if (!file_exists(dir + "/log.key")) generate_key_pair(dir + "/log.key", dir + "/log.pub");
  if (!db) db = open_database(loc, true);
  AuditLog log(*db, dir);
  {
    WriteTransaction tx(*db);
    db->lock_table("meta");  // two inits of one PostgreSQL database: the second finds the first's origin
    if (holds_registry(*db)) throw invalid_argument(loc.display + " already holds a registry");
    db->execute("INSERT INTO meta(key, value) VALUES('origin', ?), ('schema', '1')",
                {"bulwark-registry/" + random_hex(8)});
    log.append(local_actor(), "registry.init", loc.display, json::object());
    tx.commit();
  }
  log.write_checkpoint();
}

Registry::Registry(const std::string& location, std::string actor, bool allow_unsigned, Access access)
    : location_(parse_location(location)), actor_(std::move(actor)), allow_unsigned_(allow_unsigned),
      access_(access), objects_(location_.dir),
      db_(open_database(location_, false, access == Access::kReadOnly)),
      audit_(std::make_unique<AuditLog>(*db_, location_.dir)) {}

Registry::~Registry() = default;
Registry::Registry(Registry&&) noexcept = default;

void Registry::checkpoint() {
  try {
    audit_->write_checkpoint();
  } catch (const std::exception& e) {
    // The entry is committed; the next append's checkpoint will cover it.
    std::cerr << "bulwark: warning: audit checkpoint not updated: " << e.what() << "\n";
  }
}

AuditEntry Registry::record(const std::string& action, const std::string& subject, const json& details,
                            const std::string& actor) {
  if (read_only()) throw invalid_argument(location() + " is opened read-only: audit entry " + action + " not written");
  WriteTransaction tx(*db_);
  auto e = audit_->append(actor.empty() ? actor_ : actor, action, subject, details);
  tx.commit();
  checkpoint();
  return e;
}

TrustList Registry::trust() const {
  if (pinned_trust_) return *pinned_trust_;
  return TrustList::load_dir(dir() + "/trust");
}

void Registry::pin_trust(TrustList keys, const std::string& log_key_pem) {
  pinned_trust_ = std::move(keys);
  if (!log_key_pem.empty()) audit_->pin_log_key(log_key_pem);
}

TrustList load_trust_roots(const std::string& path) {
  TrustList keys;
  if (directory_exists(path)) {
    keys = TrustList::load_dir(path);
  } else if (file_exists(path)) {
    keys.add(PublicKey::from_pem(read_file(path), path));
  } else {
    throw not_found("trusted keys " + path + ": no such file or directory");
  }
  if (keys.size() == 0) throw invalid_argument("trusted keys " + path + ": no *.pub public keys in it");
  return keys;
}

std::string Registry::trust_key(const std::string& public_pem_path) {
  const auto key = PublicKey::from_pem(read_file(public_pem_path), public_pem_path);
  WriteTransaction tx(*db_);
  atomic_write_file(dir() + "/trust/" + key.key_id() + ".pub", key.pem());
  audit_->append(actor_, "keys.trust", key.key_id(), {{"source", public_pem_path}});
  tx.commit();
  checkpoint();
  return key.key_id();
}

void Registry::untrust_key(const std::string& key_id) {
  if (key_id.size() != 64 || key_id.find_first_not_of("0123456789abcdef") != std::string::npos) {
    throw invalid_argument("key id '" + key_id + "' must be 64 lowercase hex characters (see `bulwark keys list`)");
  }
  const std::string path = dir() + "/trust/" + key_id + ".pub";
  if (!file_exists(path)) throw not_found("key " + key_id + " is not in the trust list");
  WriteTransaction tx(*db_);
  fs::remove(path);
  audit_->append(actor_, "keys.untrust", key_id, json::object());
  tx.commit();
  checkpoint();
}

VersionRecord Registry::register_version(const RegisterRequest& r, const SigningKey* key) {
  check_model_name(r.model);
  if (r.files.empty()) throw invalid_argument("a version needs at least one file");
  if (!r.lineage.is_object() || !r.metrics.is_object()) throw invalid_argument("lineage and metrics must be JSON objects");
  if (key == nullptr && r.bundle.empty() && !allow_unsigned_) {
    throw invalid_argument("no signing key: give --key (or --allow-unsigned, for development only)");
  }
  if (key != nullptr && trust().find(key->key_id()) == nullptr) {
    throw invalid_argument("signing key " + key->key_id() + " is not in the registry's trust list (bulwark keys trust)");
  }
  std::map<std::string, std::string> digests;
  std::vector<FileDigest> signed_files;
  for (const auto& [name, path] : r.files) {
    check_file_name(name);
    digests[name] = objects_.put(path);
    signed_files.push_back({name, digests[name]});
  }
  std::string bundle = key != nullptr ? sign_bundle(*key, r.model, signed_files) : "";
  std::string key_id = key != nullptr ? key->key_id() : "";
  if (!r.bundle.empty()) {  // signed elsewhere: the signature must cover exactly these bytes
    const auto verified = verify_bundle(r.bundle, trust());
    if (verified.model_name != r.model) {
      throw SignatureError("statement", "the signature's subject is '" + verified.model_name + "', not '" + r.model +
                                            "': model_signing names the subject after the signed directory, so sign a "
                                            "directory named like the model");
    }
    std::map<std::string, std::string> by_name;
    for (const auto& f : signed_files) by_name[f.name] = objects_.path_of(f.sha256_hex);
    verify_files(verified, by_name);
    bundle = r.bundle;
    key_id = verified.key_id;
  }
  const bool is_signed = !bundle.empty();

  WriteTransaction tx(*db_);
  db_->execute("INSERT INTO models(name, created, created_by) VALUES(?, ?, ?) ON CONFLICT DO NOTHING",
               {r.model, utc_timestamp(), actor_});
  lock_model(*db_, r.model);  // the number read next stays free until this commits
  const int64_t version =
      db_->query("SELECT COALESCE(MAX(version), 0) + 1 FROM versions WHERE model = ?", {r.model}).at(0).int64(0);
  if (r.parent && (*r.parent < 1 || *r.parent >= version)) {
    throw not_found("parent version " + std::to_string(*r.parent) + " of " + r.model + " does not exist");
  }
  const Value no_value = nullptr;
  db_->execute("INSERT INTO versions(model, version, stage, files, bundle, key_id, parent, lineage, metrics, "
               "created, created_by) VALUES(?, ?, 'none', ?, ?, ?, ?, ?, ?, ?, ?)",
               {r.model, version, json(digests).dump(), is_signed ? Value(bundle) : no_value,
                is_signed ? Value(key_id) : no_value, r.parent ? Value(*r.parent) : no_value,
                r.lineage.dump(), r.metrics.dump(), utc_timestamp(), actor_});
  // After the insert, which waits for a gc holding the versions table (PostgreSQL) and is waited
  // for by one that starts later: a gc that ran between the put and here is seen, and undone.
  for (const auto& [name, sha] : digests) {
    if (!objects_.has(sha)) objects_.put(r.files.at(name));
  }
  json details{{"files", digests}, {"signed", is_signed}, {"lineage", r.lineage}};
  if (is_signed) details["key_id"] = key_id;
  if (!r.bundle.empty()) details["signature"] = "imported";
  if (r.parent) details["parent"] = *r.parent;
  audit_->append(actor_, "registry.register", r.model + "@" + std::to_string(version), details);
  tx.commit();
  checkpoint();
  return resolve(Reference{r.model, version, Stage::kNone});
}

std::vector<std::string> Registry::models() const {
  std::vector<std::string> out;
  for (const auto& r : db_->query("SELECT name FROM models ORDER BY name")) out.push_back(r.text(0));
  return out;
}

std::vector<VersionRecord> Registry::versions(const std::string& model) const {
  std::vector<VersionRecord> out;
  for (const auto& r : db_->query(std::string(kVersionColumns) + "WHERE model = ? ORDER BY version", {model})) {
    out.push_back(read_version(r));
  }
  if (out.empty()) throw not_found("model '" + model + "' is not in the registry");
  return out;
}

VersionRecord Registry::resolve(const Reference& ref) const {
  const auto all = versions(ref.model);
  if (ref.version == Reference::kLatest) return all.back();
  for (const auto& v : all) {
    if (ref.version > 0 ? v.version == ref.version : v.stage == ref.stage) return v;
  }
  if (ref.version > 0) {
    throw not_found("version " + std::to_string(ref.version) + " of model '" + ref.model + "' does not exist (latest is " +
                    std::to_string(all.back().version) + ")");
  }
  throw not_found("model '" + ref.model + "' has no version in stage " + to_string(ref.stage));
}

SignedStage Registry::latest_stage(const std::string& model) {
  check_model_name(model);
  const auto rows = db_->query("SELECT counter, statement, signature, key_id FROM stage_statements WHERE model = ? "
                               "ORDER BY counter DESC LIMIT 1",
                               {model});
  if (rows.empty()) {
    throw not_found("model '" + model + "' has no stage statement: its stages were set before stage changes were "
                    "signed, or only in the database; promote the version again (bulwark registry promote " +
                    model + "@N --key KEY)");
  }
  const std::string what = "stage statement #" + std::to_string(rows[0].int64(0)) + " of " + model;
  SignedStage s;
  s.statement = StageStatement::parse(rows[0].text(1));
  const auto& st = s.statement;
  if (st.registry != audit_->origin() || st.model != model || st.counter != rows[0].int64(0)) {
    throw SignatureError("stage-statement", what + " does not match its row (it names " + st.model + " #" +
                                                std::to_string(st.counter) + " in " + st.registry +
                                                "): copied from elsewhere");
  }
  const std::string change = " (" + st.action + " " + model + "@" + std::to_string(st.version) + " to " + st.stage + ")";
  if (rows[0].is_null(2) || rows[0].is_null(3)) {
    if (!allow_unsigned_) {
      throw SignatureError("unsigned", what + change + " is not signed: stage changes that servers follow need an "
                                              "operator key (registry promote/rollback --key)");
    }
  } else {
    s.key_id = rows[0].text(3);
    verify_stage_signature(rows[0].text(1), rows[0].text(2), s.key_id, trust(), what + change);
  }
  s.sha256 = sha256_hex(rows[0].text(1));
  return s;
}

VersionRecord Registry::resolve_signed(const std::string& model, Stage stage, SignedStage* statement) {
  if (stage != Stage::kProduction && stage != Stage::kStaging) {
    throw invalid_argument("only production and staging are followed by stage statements, not " + to_string(stage));
  }
  auto s = latest_stage(model);
  const auto& slot = s.statement.slot(to_string(stage));
  const std::string what = "stage statement #" + std::to_string(s.statement.counter) + " of " + model;
  if (!slot) throw not_found("model '" + model + "' has no version in stage " + to_string(stage) + " by its " + what);
  const auto v = resolve(Reference{model, slot->version, Stage::kNone});
  if (files_sha256(v.files) != slot->files_sha256) {
    throw SignatureError("stage-statement", v.ref() + "'s files are not the ones " + what + " put in " +
                                                to_string(stage) + ": the version's row was changed");
  }
  if (statement != nullptr) *statement = std::move(s);
  return v;
}

void Registry::check_stage_audited(const SignedStage& stage) {
  AuditVerifyOptions o;
  o.witness_dir = witness_dir_;
  std::vector<AuditEntry> verified;
  o.entries_out = &verified;
  const auto verdict = audit_->verify(o);
  if (!verdict.ok) throw SignatureError("audit", "the audit log does not verify: " + verdict.problem);
  const std::string& model = stage.statement.model;
  bool found = false;
  int64_t newest = 0;
  for (const auto& e : verified) {  // the entries as verified, not a second read
    if ((e.action != "registry.promote" && e.action != "registry.rollback") || e.subject.rfind(model + "@", 0) != 0) {
      continue;
    }
    const json d = json::parse(e.details, nullptr, false);
    if (!d.is_object() || !d.contains("statement") || !d["statement"].is_object()) continue;
    newest = std::max(newest, d["statement"].value("counter", int64_t{0}));
    found = found || d["statement"].value("sha256", "") == stage.sha256;
  }
  const std::string what = "stage statement #" + std::to_string(stage.statement.counter) + " of " + model;
  if (!found) {
    throw SignatureError("audit", what + " is not recorded in the audit log: written around the registry");
  }
  if (newest > stage.statement.counter) {
    throw SignatureError("audit", "the audit log records stage statement #" + std::to_string(newest) + " of " + model +
                                      " but the database's latest is #" + std::to_string(stage.statement.counter) +
                                      ": statements were deleted (a stage rolled back in the database)");
  }
}

std::map<std::string, std::string> Registry::verify(const VersionRecord& v) {
  std::map<std::string, std::string> paths;
  for (const auto& [name, sha] : v.files) paths[name] = objects_.path_of(sha);
  read_verified(v);
  return paths;
}

std::map<std::string, std::string> Registry::read_verified(const VersionRecord& v) {
  std::map<std::string, std::string> bytes;
  try {
    for (const auto& [name, sha] : v.files) {
      const std::string path = objects_.path_of(sha);
      if (!file_exists(path)) throw not_found(v.ref() + ": object for " + name + " is missing");
      bytes[name] = read_file(path);
    }
    if (!v.is_signed()) {
      if (!allow_unsigned_) throw SignatureError("unsigned", v.ref() + " is unsigned (registered with --allow-unsigned)");
      // No signature to check, but the bytes must still be the ones registered.
      for (const auto& [name, data] : bytes) {
        if (sha256_hex(data) != v.files.at(name)) {
          throw SignatureError("digest", name + ": the stored bytes are not the ones registered");
        }
      }
      return bytes;
    }
    const auto verified = verify_bundle(v.bundle, trust());
    if (verified.model_name != v.model) {
      throw SignatureError("statement", v.ref() + ": the signature is for model '" + verified.model_name + "'");
    }
    for (const auto& file : v.files) {
      const std::string& name = file.first;  // structured bindings cannot be captured before C++20 (clang)
      const bool listed = std::any_of(verified.files.begin(), verified.files.end(), [&](const FileDigest& f) {
        return f.name == name && f.sha256_hex == file.second;
      });
      if (!listed) throw SignatureError("digest", v.ref() + ": file " + name + " is not the one that was signed");
    }
    verify_contents(verified, bytes);
  } catch (const std::exception& e) {
    const auto* se = dynamic_cast<const SignatureError*>(&e);
    const std::string check = se != nullptr ? se->check : "objects";
    if (!read_only()) record("registry.verify-failed", v.ref(), {{"check", check}, {"error", e.what()}});
    // The message says which check failed, so a refusal in serve or promote explains itself.
    throw SignatureError(check, v.ref() + " failed verification (" + check + "): " + e.what());
  }
  return bytes;
}

VersionRecord Registry::set_stage(const VersionRecord& v, Stage stage, const std::string& action, const json& extra) {
  WriteTransaction tx(*db_);
  lock_model(*db_, v.model);
  // Re-read inside the lock: another process may have moved stages since we looked.
  const auto now = resolve(Reference{v.model, v.version, Stage::kNone});
  json details = extra;
  details["from"] = to_string(now.stage);
  details["to"] = to_string(stage);
  if (stage == Stage::kStaging || stage == Stage::kProduction) {
    for (const auto& other : versions(v.model)) {
      if (other.stage != stage || other.version == v.version) continue;
      update_stage(*db_, v.model, other.version, Stage::kArchived);
      insert_stage_change(*db_, v.model, other.version, stage, Stage::kArchived, actor_);
      details["archived"] = other.version;
    }
  }
  update_stage(*db_, v.model, v.version, stage);
  insert_stage_change(*db_, v.model, v.version, now.stage, stage, actor_);
  if (!v.is_signed()) details["unsigned"] = true;
  // The signed statement of the model's stages after this change, in the same transaction as its
  // audit entry: servers follow it, never the column updated above.
  StageStatement st;
  st.registry = audit_->origin();
  st.model = v.model;
  st.counter =
      db_->query("SELECT COALESCE(MAX(counter), 0) + 1 FROM stage_statements WHERE model = ?", {v.model}).at(0).int64(0);
  st.action = action == "registry.rollback" ? "rollback" : "promote";
  st.version = v.version;
  st.stage = to_string(stage);
  for (const auto& x : versions(v.model)) {
    if (x.stage == Stage::kProduction) st.production = StageSlot{x.version, files_sha256(x.files)};
    if (x.stage == Stage::kStaging) st.staging = StageSlot{x.version, files_sha256(x.files)};
  }
  st.time = utc_timestamp();
  st.actor = actor_;
  const std::string payload = st.payload();
  const Value no_value = nullptr;
  db_->execute("INSERT INTO stage_statements(model, counter, statement, signature, key_id) VALUES(?, ?, ?, ?, ?)",
               {st.model, st.counter, payload,
                operator_key_ ? Value(sign_stage_statement(*operator_key_, payload)) : no_value,
                operator_key_ ? Value(operator_key_->key_id()) : no_value});
  details["statement"] = {{"counter", st.counter}, {"sha256", sha256_hex(payload)}, {"signed", operator_key_ != nullptr}};
  if (operator_key_) details["statement"]["key_id"] = operator_key_->key_id();
  audit_->append(actor_, action, v.ref(), details);
  tx.commit();
  checkpoint();
  return resolve(Reference{v.model, v.version, Stage::kNone});
}

VersionRecord Registry::promote(const std::string& model, int64_t version, Stage stage) {
  const auto v = resolve(Reference{model, version, Stage::kNone});
  if (stage == Stage::kStaging || stage == Stage::kProduction) verify(v);
  return set_stage(v, stage, "registry.promote", json::object());
}

VersionRecord Registry::rollback(const std::string& model, std::optional<int64_t> to) {
  VersionRecord current;
  try {
    current = resolve(Reference{model, 0, Stage::kProduction});
  } catch (const Error&) {
    throw not_found("model '" + model + "' has no production version to roll back");
  }
  int64_t target = to.value_or(0);
  if (target == 0) {
    const auto rows = db_->query("SELECT version FROM stage_changes WHERE model = ? AND to_stage = 'production' "
                                 "AND version != ? ORDER BY id DESC LIMIT 1",
                                 {model, current.version});
    if (rows.empty()) throw not_found("model '" + model + "' has no earlier production version to roll back to");
    target = rows[0].int64(0);
  }
  if (target == current.version) throw invalid_argument(current.ref() + " is already in production");
  const auto v = resolve(Reference{model, target, Stage::kNone});
  verify(v);
  return set_stage(v, Stage::kProduction, "registry.rollback", {{"replaced", current.version}});
}

ObjectStore::GcResult Registry::gc(bool dry_run) {
  WriteTransaction tx(*db_);
  db_->lock_table("versions");  // no version is added (or its objects re-put) until this commits
  std::set<std::string> keep;
  for (const auto& row : db_->query("SELECT files FROM versions")) {
    const json files = json::parse(row.text(0));
    for (const auto& [name, sha] : files.items()) keep.insert(sha.get<std::string>());
  }
  const auto r = objects_.gc(keep, dry_run);
  if (!dry_run) {
    audit_->append(actor_, "registry.gc", location(),
                   {{"removed_objects", r.removed_objects}, {"removed_temp", r.removed_temp}, {"bytes", r.bytes_freed}});
  }
  tx.commit();
  if (!dry_run) checkpoint();
  return r;
}

}  // namespace bulwark::registry
