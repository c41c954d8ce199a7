#include "serve/model_source.h"

#include <sys/statvfs.h>
#include <unistd.h>

#include <filesystem>
#include <iostream>

#include "core/error.h"
#include "core/files.h"
#include "registry/registry.h"

namespace bulwark::serve {
namespace fs = std::filesystem;

namespace {

Error permission_denied(const std::string& what) { return Error(ErrorKind::kPermissionDenied, what); }

// A SQLite registry whose directory this process cannot write (a read-only mount, as KServe mounts
// a pvc:// storage URI, or another owner): opened read-only, said once.
registry::Registry::Access registry_access(const std::string& location) {
  const auto loc = registry::parse_location(location);
  if (loc.backend != registry::Backend::kSqlite) return registry::Registry::Access::kReadWrite;
  struct statvfs fs {};
  const bool read_only_fs = ::statvfs(loc.dir.c_str(), &fs) == 0 && (fs.f_flag & ST_RDONLY) != 0;
  if (!read_only_fs && ::access(loc.dir.c_str(), W_OK) == 0) return registry::Registry::Access::kReadWrite;
  std::cerr << "bulwark serve: registry " << loc.display << " is "
            << (read_only_fs ? "on a read-only file system" : "not writable by this user")
            << ": opened read-only. Models are verified as usual; this server's loads and refusals are not "
               "written to the registry's audit log (see the access log and --events)\n";
  return registry::Registry::Access::kReadOnly;
}

}  // namespace

bool is_registry_reference(const std::string& reference) { return reference.rfind("registry:", 0) == 0; }

void ModelSourceOptions::validate() const {
  if (!model_root.empty() && !directory_exists(model_root)) {
    throw invalid_argument("--model-root " + model_root + ": no such directory");
  }
  if (follow_interval_ms < 50 || follow_interval_ms > 60000) {
    throw invalid_argument("--follow-interval-ms must be in 50..60000");
  }
  if (!audit_witness.empty() && !directory_exists(audit_witness)) {
    throw invalid_argument("--audit-witness " + audit_witness + ": no such directory");
  }
  if (!registry.empty() && (trust_keys.empty() || log_key.empty())) {
    throw invalid_argument("--registry needs --trust-keys PATH (the public keys, a .pub file or a directory of them, "
                           "whose model signatures and stage changes this server accepts) and --log-key FILE (the "
                           "audit log's public key, a copy of the registry's log.pub), both kept outside the registry "
                           "directory: a read-only mount or a Kubernetes Secret. The registry's own trust/ and log.pub "
                           "can be rewritten by anyone who can write the registry");
  }
}

ModelSource::ModelSource(ModelSourceOptions options) : options_(std::move(options)) {
  options_.validate();
  if (!options_.registry.empty()) {
    registry_ = std::make_unique<registry::Registry>(options_.registry, "serve:" + registry::local_actor().substr(6),
                                                     options_.allow_unsigned, registry_access(options_.registry));
    registry_->pin_trust(registry::load_trust_roots(options_.trust_keys), read_file(options_.log_key));
    if (!options_.audit_witness.empty()) registry_->set_witness(options_.audit_witness);
  }
}

ModelSource::~ModelSource() = default;

ResolvedModel ModelSource::resolve(const std::string& reference, bool from_client) {
  if (!is_registry_reference(reference)) return resolve_file(reference, from_client);
  if (!registry_) throw invalid_argument("'" + reference + "' is a registry reference, but the server has no --registry");
  const auto ref = registry::parse_reference(reference);
  std::lock_guard<std::mutex> lock(mu_);
  const std::string key = "registry:" + ref.text();
  registry::VersionRecord v;
  registry::SignedStage stage;
  const bool by_statement = ref.version == 0;
  if (by_statement) {
    // A stage is what the latest signed statement says, bound to the version's files, recorded in
    // an audit log that verifies against the pinned log key; never the database's stage column.
    try {
      v = registry_->resolve_signed(ref.model, ref.stage, &stage);
      check_follow(followed_[key], stage, v.version);
      registry_->check_stage_audited(stage);
    } catch (const registry::SignatureError& e) {
      audit_locked("serve.follow-refused", "registry:" + ref.text(), {{"check", e.check}, {"error", e.what()}}, "");
      throw;
    }
  } else {
    v = registry_->resolve(ref);
  }
  auto bytes = registry_->read_verified(v);  // audits and rethrows a failed check
  const auto model = bytes.find("model.pt");
  if (model == bytes.end()) throw data_format(v.ref() + " has no model.pt");
  ResolvedModel r;
  r.path = registry_->objects().path_of(v.files.at("model.pt"));
  r.model_bytes = std::make_shared<const std::string>(std::move(model->second));
  if (const auto cal = bytes.find("model.detect"); cal != bytes.end()) {
    r.calibration = registry_->objects().path_of(v.files.at("model.detect"));
    r.calibration_bytes = std::make_shared<const std::string>(std::move(cal->second));
  }
  r.reference = "registry:" + ref.text();
  r.origin = "registry:" + v.ref();
  r.registry_version = v.version;
  r.by_stage = ref.version <= 0;  // a stage or "latest": followed
  r.is_signed = v.is_signed();
  if (by_statement) followed_[key] = Followed{stage.statement.counter, v.version, stage.sha256, ""};
  if (options_.after_verify_for_tests) options_.after_verify_for_tests(r);
  return r;
}

void ModelSource::check_follow(const Followed& f, const registry::SignedStage& stage, int64_t version) {
  const auto& st = stage.statement;
  if (f.counter == 0 || stage.sha256 == f.sha256) return;  // first load, or the statement already followed
  const std::string what = "stage statement #" + std::to_string(st.counter) + " of " + st.model;
  if (st.counter < f.counter) {
    throw registry::SignatureError("stage-statement", what + " is older than #" + std::to_string(f.counter) +
                                                          ", already followed: statements were deleted or replayed");
  }
  if (st.counter == f.counter) {
    throw registry::SignatureError("stage-statement", what + " changed since it was followed");
  }
  if (version < f.version && st.action != "rollback") {
    throw registry::SignatureError("stage-statement",
                                   what + " moves back from version " + std::to_string(f.version) + " to " +
                                       std::to_string(version) + " without being a rollback: downgrades go through "
                                       "`bulwark registry rollback`");
  }
}

ResolvedModel ModelSource::resolve_file(const std::string& path, bool from_client) {
  ResolvedModel r;
  r.reference = path;
  if (from_client) {
    if (options_.model_root.empty()) {
      throw permission_denied("clients may load registry references (registry:NAME@STAGE) only; "
                              "plain paths need the server's --model-root");
    }
    const fs::path rel(path);
    bool climbs = rel.empty() || rel.is_absolute();
    for (const auto& part : rel) climbs = climbs || part == "..";
    if (climbs) throw permission_denied("parameters.path must be a relative path under the model root, without '..'");
    std::error_code ec;
    const fs::path root = fs::canonical(options_.model_root, ec);
    // Without this check a vanished root made `root / rel` relative to the working directory.
    if (ec) throw not_found("the model root (--model-root) is not available");
    const fs::path full = fs::canonical(root / rel, ec);
    if (ec) throw not_found("no model file '" + path + "' under the model root");
    const auto [root_end, _] = std::mismatch(root.begin(), root.end(), full.begin(), full.end());
    if (root_end != root.end()) throw permission_denied("parameters.path resolves outside the model root (symlink)");
    r.path = full.string();
  } else {
    r.path = path;
  }
  if (!options_.allow_unsigned) {
    throw registry::SignatureError("unsigned", "'" + path + "' is an unsigned file: serve a signed registry version "
                                               "(registry:NAME@STAGE) or pass --allow-unsigned (development only)");
  }
  r.origin = "file:" + r.path;
  return r;
}

int64_t ModelSource::current_version(const std::string& reference) {
  if (!registry_ || !is_registry_reference(reference)) return 0;
  const auto ref = registry::parse_reference(reference);
  if (ref.version > 0) return 0;  // pinned
  std::lock_guard<std::mutex> lock(mu_);
  if (ref.version == registry::Reference::kLatest) {
    try {
      return registry_->resolve(ref).version;
    } catch (const std::exception&) {
      return 0;  // the database is busy: keep serving what we have
    }
  }
  auto& f = followed_["registry:" + ref.text()];
  try {
    registry::SignedStage stage;
    const auto v = registry_->resolve_signed(ref.model, ref.stage, &stage);
    if (stage.sha256 == f.sha256) return f.version;
    check_follow(f, stage, v.version);
    return v.version;  // the caller loads it through resolve(), which checks the audit log too
  } catch (const registry::SignatureError& e) {
    if (f.refused != e.what()) {  // audited once per distinct refusal, not every poll
      f.refused = e.what();
      std::cerr << "bulwark serve: not following " << reference << ": " << e.what() << "\n";
      audit_locked("serve.follow-refused", "registry:" + ref.text(), {{"check", e.check}, {"error", e.what()}}, "");
    }
    return 0;
  } catch (const std::exception&) {
    return 0;  // the stage is empty now (or the database is busy): keep serving what we have
  }
}

void ModelSource::audit(const std::string& action, const std::string& subject, const nlohmann::json& details,
                        const std::string& actor) {
  if (!registry_) return;
  std::lock_guard<std::mutex> lock(mu_);
  audit_locked(action, subject, details, actor);
}

void ModelSource::audit_locked(const std::string& action, const std::string& subject, const nlohmann::json& details,
                               const std::string& actor) {
  if (registry_->read_only()) return;  // said once, when it was opened
  try {
    registry_->record(action, subject, details, actor);
  } catch (const std::exception& e) {
    std::cerr << "bulwark serve: warning: audit entry " << action << " not written: " << e.what() << "\n";
  }
}

}  // namespace bulwark::serve
