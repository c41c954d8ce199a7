// bulwark registry / keys — model versions, stages, signatures and the trust list.
#include <filesystem>
#include <fstream>
#include <iostream>
#include <set>

#include "cli/common.h"
#include "core/error.h"
#include "core/files.h"
#include "registry/registry.h"

namespace bulwark::cli {
namespace {

using nlohmann::json;
using registry::Registry;

struct RegistryFlags {
  std::string dir = "bulwark-registry";
  bool allow_unsigned = false;
  std::string operator_key;  // promote / rollback: signs the stage statement
};

// A directory (SQLite), or postgresql://USER@HOST:PORT/DB?dir=SHARED_DIR (docs/registry.md).
void add_registry_flag(CLI::App* cmd, RegistryFlags& f) {
  cmd->add_option("--registry", f.dir, "Registry: a directory, or postgresql://USER@HOST/DB?dir=SHARED_DIR")
      ->capture_default_str();
}

Registry open_registry(const RegistryFlags& f) {
  if (f.allow_unsigned) {
    std::cerr << "bulwark: WARNING: --allow-unsigned: unsigned model versions are accepted (development only)\n";
  }
  return Registry(f.dir, registry::local_actor(), f.allow_unsigned);
}

std::string or_dash(const std::string& s) { return s.empty() ? "-" : s; }

struct RegisterFlags {
  std::string model, file, calibration, key, dataset, dataset_sha256, method, command, metrics;
  int64_t parent = 0;
  double eps = -1;
  int64_t seed = -1;
};

void run_register(const RegisterFlags& f, const RegistryFlags& rf, const GlobalOptions& g) {
  auto reg = open_registry(rf);
  registry::RegisterRequest r;
  r.model = f.model;
  r.files["model.pt"] = f.file;
  if (!f.calibration.empty()) r.files["model.detect"] = f.calibration;
  if (f.parent > 0) r.parent = f.parent;
  const std::vector<std::pair<const char*, std::string>> text{
      {"dataset", f.dataset}, {"dataset_sha256", f.dataset_sha256}, {"method", f.method}, {"command", f.command}};
  for (const auto& [k, v] : text) {
    if (!v.empty()) r.lineage[k] = v;
  }
  if (f.eps >= 0) r.lineage["eps"] = f.eps;
  if (f.seed >= 0) r.lineage["seed"] = f.seed;
  if (!f.metrics.empty()) {
    r.metrics = json::parse(read_file(f.metrics), nullptr, false);
    if (!r.metrics.is_object()) throw invalid_argument("--metrics " + f.metrics + ": must hold a JSON object");
  }
  std::optional<registry::SigningKey> key;
  if (!f.key.empty()) key = registry::SigningKey::load(f.key);
  const auto v = reg.register_version(r, key ? &*key : nullptr);
  print_result(g, v.to_json(),
               {{"registered", v.ref()},
                {"signed", v.is_signed() ? "yes, key " + v.key_id.substr(0, 16) : "NO (--allow-unsigned)"},
                {"files", std::to_string(v.files.size())},
                {"stage", to_string(v.stage)}});
}

void run_list(const std::string& model, const RegistryFlags& rf, const GlobalOptions& g) {
  auto reg = open_registry(rf);
  json out = json::array();
  std::vector<std::vector<std::string>> rows;
  if (model.empty()) {
    for (const auto& name : reg.models()) {
      const auto vs = reg.versions(name);
      std::string prod = "-", staging = "-";
      for (const auto& v : vs) {
        if (v.stage == registry::Stage::kProduction) prod = std::to_string(v.version);
        if (v.stage == registry::Stage::kStaging) staging = std::to_string(v.version);
      }
      out.push_back({{"model", name}, {"versions", vs.size()}, {"latest", vs.back().version},
                     {"production", prod}, {"staging", staging}});
      rows.push_back({name, std::to_string(vs.size()), std::to_string(vs.back().version), prod, staging});
    }
    if (g.json) std::cout << out.dump(2) << std::endl;
    else print_table({"MODEL", "VERSIONS", "LATEST", "PRODUCTION", "STAGING"}, rows);
    return;
  }
  for (const auto& v : reg.versions(registry::parse_reference(model).model)) {
    out.push_back(v.to_json());
    rows.push_back({v.ref(), to_string(v.stage), v.is_signed() ? v.key_id.substr(0, 12) : "UNSIGNED",
                    v.parent ? std::to_string(*v.parent) : "-", or_dash(v.lineage.value("method", "")), v.created});
  }
  if (g.json) std::cout << out.dump(2) << std::endl;
  else print_table({"VERSION", "STAGE", "KEY", "PARENT", "METHOD", "CREATED"}, rows);
}

void run_show(const std::string& ref, bool bundle, const RegistryFlags& rf, const GlobalOptions& g) {
  auto reg = open_registry(rf);
  const auto v = reg.resolve(registry::parse_reference(ref));
  if (bundle) {
    if (!v.is_signed()) throw not_found(v.ref() + " is unsigned: it has no bundle");
    std::cout << v.bundle << std::endl;
    return;
  }
  std::vector<std::pair<std::string, std::string>> rows{
      {"version", v.ref()}, {"stage", to_string(v.stage)},
      {"signed", v.is_signed() ? "key " + v.key_id : "NO"}, {"parent", v.parent ? std::to_string(*v.parent) : "-"},
      {"created", v.created + " by " + v.created_by}};
  for (const auto& [name, sha] : v.files) rows.push_back({"file " + name, sha});
  for (const auto& [k, val] : v.lineage.items()) rows.push_back({"lineage." + k, val.is_string() ? val.get<std::string>() : val.dump()});
  for (const auto& [k, val] : v.metrics.items()) rows.push_back({"metrics." + k, val.dump()});
  print_result(g, v.to_json(), rows);
}

// A stage change is a statement signed by an operator key; servers follow nothing else.
void use_operator_key(Registry& reg, const RegistryFlags& rf, const char* command) {
  if (!rf.operator_key.empty()) {
    const auto key = std::make_shared<const registry::SigningKey>(registry::SigningKey::load(rf.operator_key));
    if (reg.trust().find(key->key_id()) == nullptr) {
      throw invalid_argument("--key " + rf.operator_key + ": key " + key->key_id().substr(0, 16) +
                             "... is not in the registry's trust list (bulwark keys trust), so no server would follow "
                             "its stage changes");
    }
    reg.set_operator_key(key);
  } else if (!rf.allow_unsigned) {
    throw invalid_argument(std::string(command) + " needs --key: a stage change is a statement signed by an operator "
                           "key that servers check against their --trust-keys (or --allow-unsigned, development only)");
  }
}

// A directory signed by the OpenSSF model_signing tool (`model_signing sign key ... DIR`, the
// signature in DIR/model.sig): every other file in it becomes the version, under its own name, and
// the signature is checked against the trust list and the files instead of being made here.
void run_import_signed(const std::string& model, const std::string& dir, int64_t parent, const RegistryFlags& rf,
                       const GlobalOptions& g) {
  namespace fs = std::filesystem;
  if (!fs::is_directory(dir)) throw not_found("signed directory " + dir + ": no such directory");
  if (!fs::is_regular_file(dir + "/model.sig")) throw not_found(dir + "/model.sig: no signature in the directory");
  registry::RegisterRequest r;
  r.model = model;
  r.bundle = read_file(dir + "/model.sig");
  if (parent > 0) r.parent = parent;
  r.lineage["signature"] = "model_signing";
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    if (name == "model.sig" || name == ".git" || name == ".gitignore" || name == ".gitattributes" || name == ".github") {
      continue;  // what model_signing itself leaves out
    }
    if (!e.is_regular_file() || e.is_symlink()) {
      throw invalid_argument(dir + "/" + name + ": only plain files directly in the directory can be imported");
    }
    r.files[name] = e.path().string();
  }
  if (r.files.count("model.pt") == 0) throw invalid_argument(dir + " has no model.pt (the TorchScript archive served)");
  auto reg = open_registry(rf);
  const auto v = reg.register_version(r, nullptr);
  print_result(g, v.to_json(), {{"imported", v.ref()}, {"signed", "yes, key " + v.key_id.substr(0, 16)}});
}

// The version's files, as verified, and its signature as model.sig: the layout the OpenSSF
// model_signing tool verifies (`model_signing verify key --signature DIR/model.sig --public-key K
// DIR`): resources named by their file names relative to DIR, nothing else in DIR.
void run_export(const std::string& ref, const std::string& dir, const RegistryFlags& rf, const GlobalOptions& g) {
  auto reg = open_registry(rf);
  const auto v = reg.resolve(registry::parse_reference(ref));
  if (!v.is_signed()) throw invalid_argument(v.ref() + " is unsigned: there is no signature to export");
  namespace fs = std::filesystem;
  std::error_code ec;
  if (fs::exists(dir, ec) && !fs::is_empty(dir, ec)) {
    throw invalid_argument("export directory " + dir + " is not empty: model_signing verifies every file in it");
  }
  const auto bytes = reg.read_verified(v);  // what is written is what was checked
  fs::create_directories(dir);
  for (const auto& [name, data] : bytes) atomic_write_file(dir + "/" + name, data);
  atomic_write_file(dir + "/model.sig", v.bundle);
  json files = json::array();
  for (const auto& [name, sha] : v.files) files.push_back(name);
  print_result(g, {{"exported", v.ref()}, {"dir", dir}, {"files", files}, {"signature", dir + "/model.sig"}},
               {{"exported", v.ref()}, {"dir", dir}, {"signature", dir + "/model.sig"}});
}

void run_promote(const std::string& ref, const std::string& stage, const RegistryFlags& rf, const GlobalOptions& g) {
  const auto target = registry::parse_stage(stage);  // a bad stage is named before a missing key
  auto reg = open_registry(rf);
  use_operator_key(reg, rf, "registry promote");
  const auto r = registry::parse_reference(ref);
  if (r.version == 0) throw invalid_argument("promote needs a version: NAME@N or NAME@latest (got '" + ref + "')");
  const auto v = reg.promote(r.model, reg.resolve(r).version, target);
  print_result(g, v.to_json(), {{"promoted", v.ref()}, {"stage", to_string(v.stage)}});
}

void run_rollback(const std::string& model, int64_t to, const RegistryFlags& rf, const GlobalOptions& g) {
  auto reg = open_registry(rf);
  use_operator_key(reg, rf, "registry rollback");
  const auto v = reg.rollback(registry::parse_reference(model).model, to > 0 ? std::optional<int64_t>(to) : std::nullopt);
  print_result(g, v.to_json(), {{"production", v.ref()}});
}

void run_verify(const std::string& ref, const RegistryFlags& rf, const GlobalOptions& g) {
  auto reg = open_registry(rf);
  std::vector<registry::VersionRecord> todo;
  if (!ref.empty()) {
    const auto r = registry::parse_reference(ref);
    if (r.version > 0 || ref.find('@') != std::string::npos) todo.push_back(reg.resolve(r));
    else todo = reg.versions(r.model);
  } else {
    for (const auto& m : reg.models()) {
      for (auto& v : reg.versions(m)) todo.push_back(std::move(v));
    }
  }
  json out = json::array();
  std::vector<std::vector<std::string>> rows;
  int failed = 0;
  for (const auto& v : todo) {
    std::string check = "ok", error;
    try {
      reg.verify(v);
    } catch (const registry::SignatureError& e) {
      check = e.check;
      error = e.what();
    } catch (const Error& e) {
      check = "objects";
      error = e.what();
    }
    failed += check != "ok";
    out.push_back({{"version", v.ref()}, {"ok", check == "ok"}, {"check", check}, {"error", error}});
    rows.push_back({v.ref(), check == "ok" ? "ok" : "FAILED (" + check + ")", error});
  }
  // Each model's stages as the database's column says against its latest signed stage statement,
  // which is what servers follow: a difference is a stage changed outside `promote`/`rollback`.
  std::set<std::string> models;
  for (const auto& v : todo) models.insert(v.model);
  int stage_failed = 0;
  for (const auto& m : models) {
    std::string check = "ok", error;
    try {
      const auto st = reg.latest_stage(m);
      for (const auto stage : {registry::Stage::kProduction, registry::Stage::kStaging}) {
        const auto& slot = st.statement.slot(to_string(stage));
        int64_t column = 0;
        for (const auto& v : reg.versions(m)) {
          if (v.stage == stage) column = v.version;
        }
        if (column != (slot ? slot->version : 0)) {
          check = "stage-statement";
          error = to_string(stage) + " is version " + std::to_string(column) + " in the database but " +
                  std::to_string(slot ? slot->version : 0) + " by signed stage statement #" +
                  std::to_string(st.statement.counter) + ": changed outside promote/rollback (servers follow the statement)";
        }
      }
    } catch (const registry::SignatureError& e) {
      check = e.check;
      error = e.what();
    } catch (const Error& e) {
      bool staged = false;
      for (const auto& v : reg.versions(m)) staged = staged || v.stage == registry::Stage::kProduction || v.stage == registry::Stage::kStaging;
      if (!staged) continue;  // nothing staged and no statement: nothing to follow
      check = "stage-statement";
      error = e.what();
    }
    stage_failed += check != "ok";
    out.push_back({{"stages", m}, {"ok", check == "ok"}, {"check", check}, {"error", error}});
    rows.push_back({m + " (stages)", check == "ok" ? "ok" : "FAILED (" + check + ")", error});
  }
  if (g.json) std::cout << out.dump(2) << std::endl;
  else print_table({"VERSION", "RESULT", "DETAIL"}, rows);
  if (failed > 0) throw data_format(std::to_string(failed) + " of " + std::to_string(todo.size()) + " versions failed verification");
  if (stage_failed > 0) throw data_format(std::to_string(stage_failed) + " model(s) have stages their signed stage statements do not record");
}

void run_gc(bool dry_run, const RegistryFlags& rf, const GlobalOptions& g) {
  auto reg = open_registry(rf);
  const auto r = reg.gc(dry_run);
  print_result(g, {{"dry_run", dry_run}, {"removed_objects", r.removed_objects}, {"removed_temp", r.removed_temp},
                   {"bytes", r.bytes_freed}},
               {{dry_run ? "would remove" : "removed", std::to_string(r.removed_objects) + " objects, " +
                                                            std::to_string(r.removed_temp) + " temp files"},
                {"bytes", with_commas(r.bytes_freed)}});
}

void register_keys(CLI::App& app, GlobalOptions& g) {
  auto rf = std::make_shared<RegistryFlags>();
  auto* keys = app.add_subcommand("keys", "Signing keys and the registry's trust list");
  keys->require_subcommand(1);
  auto out = std::make_shared<std::string>();
  auto* gen = keys->add_subcommand("gen", "Write a new ECDSA P-256 key pair: PREFIX.key (mode 0600) and PREFIX.pub");
  gen->add_option("--out", *out, "Path prefix of the two files")->required();
  gen->callback([out, &g] {
    registry::generate_key_pair(*out + ".key", *out + ".pub");
    const auto key = registry::SigningKey::load(*out + ".key");
    print_result(g, {{"private", *out + ".key"}, {"public", *out + ".pub"}, {"key_id", key.key_id()}},
                 {{"private key", *out + ".key (0600)"}, {"public key", *out + ".pub"}, {"key id", key.key_id()}});
  });
  auto pub = std::make_shared<std::string>();
  auto* trust = keys->add_subcommand("trust", "Trust a public key: versions it signs may be promoted and served");
  trust->add_option("PUBLIC_KEY", *pub, "Public key file (PEM)")->required();
  add_registry_flag(trust, *rf);
  trust->callback([pub, rf, &g] {
    auto reg = open_registry(*rf);
    const auto id = reg.trust_key(*pub);
    print_result(g, {{"trusted", id}}, {{"trusted", id}});
  });
  auto id = std::make_shared<std::string>();
  auto* untrust = keys->add_subcommand("untrust", "Remove a key from the trust list (its signatures stop verifying)");
  untrust->add_option("KEY_ID", *id, "Key id (keys list)")->required();
  add_registry_flag(untrust, *rf);
  untrust->callback([id, rf, &g] {
    auto reg = open_registry(*rf);
    reg.untrust_key(*id);
    print_result(g, {{"untrusted", *id}}, {{"untrusted", *id}});
  });
  auto* list = keys->add_subcommand("list", "List trusted key ids");
  add_registry_flag(list, *rf);
  list->callback([rf, &g] {
    auto reg = open_registry(*rf);
    const auto ids = reg.trust().key_ids();
    if (g.json) {
      std::cout << json(ids).dump(2) << std::endl;
      return;
    }
    std::vector<std::vector<std::string>> rows;
    for (const auto& k : ids) rows.push_back({k});
    print_table({"KEY ID"}, rows);
  });
}

}  // namespace

void register_registry(CLI::App& app, GlobalOptions& g) {
  register_keys(app, g);
  auto rf = std::make_shared<RegistryFlags>();
  auto* reg = app.add_subcommand("registry", "Model registry: versions, stages, signatures");
  reg->require_subcommand(1);

  auto* init = reg->add_subcommand("init", "Create a registry (database, objects, trust list, log key)");
  add_registry_flag(init, *rf);
  init->callback([rf, &g] {
    Registry::init(rf->dir);
    const std::string where = registry::parse_location(rf->dir).display;  // no password printed
    print_result(g, {{"registry", where}}, {{"initialised", where}});
  });

  auto f = std::make_shared<RegisterFlags>();
  auto* r = reg->add_subcommand("register", "Store, sign and add a new version of a model");
  r->add_option("MODEL", f->model, "Model name ([a-z0-9._-])")->required();
  r->add_option("FILE", f->file, "TorchScript model file (.pt)")->required();
  r->add_option("--calibration", f->calibration, "Detector calibration (.detect) to version with it");
  r->add_option("--key", f->key, "Private signing key (keys gen); must be in the trust list");
  r->add_flag("--allow-unsigned", rf->allow_unsigned, "Register without a signature (development only)");
  r->add_option("--parent", f->parent, "Version this one was derived from")->check(CLI::PositiveNumber);
  r->add_option("--dataset", f->dataset, "Lineage: training data");
  r->add_option("--dataset-sha256", f->dataset_sha256, "Lineage: digest of the training data");
  r->add_option("--method", f->method, "Lineage: how it was made (train, pgd-at, trades, fast-at)");
  r->add_option("--eps", f->eps, "Lineage: training eps")->check(CLI::Range(0.0, 1.0));
  r->add_option("--train-seed", f->seed, "Lineage: training seed")->check(CLI::NonNegativeNumber);
  r->add_option("--command", f->command, "Lineage: the command line that produced the file");
  r->add_option("--metrics", f->metrics, "JSON file of metrics (clean, robust per attack/eps, detectors)");
  add_registry_flag(r, *rf);
  r->callback([f, rf, &g] { run_register(*f, *rf, g); });

  auto imp_model = std::make_shared<std::string>(), imp_dir = std::make_shared<std::string>();
  auto imp_parent = std::make_shared<int64_t>(0);
  auto* imp = reg->add_subcommand("import-signed", "Add a version from a directory signed by OpenSSF model_signing (DIR/model.sig)");
  imp->add_option("MODEL", *imp_model, "Model name: the signed directory's name (model_signing's subject)")->required();
  imp->add_option("DIR", *imp_dir, "The signed directory: model.pt, other files, model.sig")->required();
  imp->add_option("--parent", *imp_parent, "Version this one was derived from")->check(CLI::PositiveNumber);
  add_registry_flag(imp, *rf);
  imp->callback([imp_model, imp_dir, imp_parent, rf, &g] { run_import_signed(*imp_model, *imp_dir, *imp_parent, *rf, g); });

  auto name = std::make_shared<std::string>();
  auto* list = reg->add_subcommand("list", "List models, or one model's versions");
  list->add_option("MODEL", *name, "Model name");
  add_registry_flag(list, *rf);
  list->callback([name, rf, &g] { run_list(*name, *rf, g); });

  auto ref = std::make_shared<std::string>();
  auto bundle = std::make_shared<bool>(false);
  auto* show = reg->add_subcommand("show", "Show a version: NAME@N or NAME@STAGE");
  show->add_option("REF", *ref, "NAME@N or NAME@STAGE")->required();
  show->add_flag("--bundle", *bundle, "Print the version's Sigstore bundle (for independent verification)");
  add_registry_flag(show, *rf);
  show->callback([ref, bundle, rf, &g] { run_show(*ref, *bundle, *rf, g); });

  auto out_dir = std::make_shared<std::string>();
  auto* exp = reg->add_subcommand("export", "Write a version's files and model.sig to a directory (OpenSSF model_signing layout)");
  exp->add_option("REF", *ref, "NAME@N or NAME@STAGE")->required();
  exp->add_option("DIR", *out_dir, "A new or empty directory")->required();
  add_registry_flag(exp, *rf);
  exp->callback([ref, out_dir, rf, &g] { run_export(*ref, *out_dir, *rf, g); });

  auto stage = std::make_shared<std::string>("production");
  auto* promote = reg->add_subcommand("promote", "Verify a version and move it to a stage");
  promote->add_option("REF", *ref, "NAME@N or NAME@latest")->required();
  promote->add_option("--stage", *stage, "staging, production, archived or none")->capture_default_str();
  promote->add_option("--key", rf->operator_key, "Operator key that signs the stage change (servers follow only signed ones)");
  promote->add_flag("--allow-unsigned", rf->allow_unsigned, "Accept an unsigned version or stage change (development only)");
  add_registry_flag(promote, *rf);
  promote->callback([ref, stage, rf, &g] { run_promote(*ref, *stage, *rf, g); });

  auto to = std::make_shared<int64_t>(0);
  auto* rollback = reg->add_subcommand("rollback", "Put the previous production version back in production");
  rollback->add_option("MODEL", *name, "Model name")->required();
  rollback->add_option("--to", *to, "This version instead of the previous one")->check(CLI::PositiveNumber);
  rollback->add_option("--key", rf->operator_key, "Operator key that signs the stage change (servers follow only signed ones)");
  rollback->add_flag("--allow-unsigned", rf->allow_unsigned, "Accept an unsigned version or stage change (development only)");
  add_registry_flag(rollback, *rf);
  rollback->callback([name, to, rf, &g] { run_rollback(*name, *to, *rf, g); });

  auto* verify = reg->add_subcommand("verify", "Check signatures and object digests (all versions, a model, or NAME@N)");
  verify->add_option("REF", *ref, "Model or version (default: every version)");
  verify->add_flag("--allow-unsigned", rf->allow_unsigned, "Pass unsigned versions (development only)");
  add_registry_flag(verify, *rf);
  verify->callback([ref, rf, &g] { run_verify(*ref, *rf, g); });

  auto dry = std::make_shared<bool>(false);
  auto* gc = reg->add_subcommand("gc", "Remove objects no version references and temp files of dead writers");
  gc->add_flag("--dry-run", *dry, "Only count");
  add_registry_flag(gc, *rf);
  gc->callback([dry, rf, &g] { run_gc(*dry, *rf, g); });
}

}  // namespace bulwark::cli
