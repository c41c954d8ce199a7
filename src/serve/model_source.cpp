#include "serve/model_source.h"

#include <filesystem>
#include <iostream>

#include "core/error.h"
#include "core/files.h"
#include "registry/registry.h"

namespace bulwark::serve {
namespace fs = std::filesystem;

namespace {

Error permission_denied(const std::string& what) { return Error(ErrorKind::kPermissionDenied, what); }

}  // namespace

bool is_registry_reference(const std::string& reference) { return reference.rfind("registry:", 0) == 0; }

void ModelSourceOptions::validate() const {
  if (!model_root.empty() && !directory_exists(model_root)) {
    throw invalid_argument("--model-root " + model_root + ": no such directory");
  }
  if (follow_interval_ms < 50 || follow_interval_ms > 60000) {
    throw invalid_argument("--follow-interval-ms must be in 50..60000");
  }
}

ModelSource::ModelSource(ModelSourceOptions options) : options_(std::move(options)) {
  options_.validate();
  if (!options_.registry.empty()) {
    registry_ = std::make_unique<registry::Registry>(options_.registry, "serve:" + registry::local_actor().substr(6),
                                                     options_.allow_unsigned);
  }
}

ModelSource::~ModelSource() = default;

ResolvedModel ModelSource::resolve(const std::string& reference, bool from_client) {
  if (!is_registry_reference(reference)) return resolve_file(reference, from_client);
  if (!registry_) throw invalid_argument("'" + reference + "' is a registry reference, but the server has no --registry");
  const auto ref = registry::parse_reference(reference);
  std::lock_guard<std::mutex> lock(mu_);
  const auto v = registry_->resolve(ref);
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
  if (options_.after_verify_for_tests) options_.after_verify_for_tests(r);
  return r;
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
  try {
    return registry_->resolve(ref).version;
  } catch (const std::exception&) {
    return 0;  // the stage is empty now (or the database is busy): keep serving what we have
  }
}

void ModelSource::audit(const std::string& action, const std::string& subject, const nlohmann::json& details,
                        const std::string& actor) {
  if (!registry_) return;
  std::lock_guard<std::mutex> lock(mu_);
  try {
    registry_->record(action, subject, details, actor);
  } catch (const std::exception& e) {
    std::cerr << "bulwark serve: warning: audit entry " << action << " not written: " << e.what() << "\n";
  }
}

}  // namespace bulwark::serve
