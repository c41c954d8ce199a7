// The registry's library API, on SQLite and on PostgreSQL: layout, versions and stages, unsigned
// versions, tamper detection, key rotation, gc, run records, and two processes promoting at once.
#include "registry/store.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <iostream>
#include <map>
#include <set>
#include <thread>

#include <SQLiteCpp/SQLiteCpp.h>

#include "backends.h"
#include "registry/runs.h"
#include "registry_test_util.h"

namespace bulwark::registry {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using test::contains;
using test::error_of;
using test::signature_check_of;

// A fresh registry with key "a" generated and trusted. `loc` is what --registry takes, `dir` the
// directory with its objects (the same for SQLite).
struct Env {
  test::TempDir tmp;
  test::Location where;
  std::string loc, dir;
  uint64_t next_seed = 1;

  explicit Env(Backend backend) : where(test::new_location(backend, tmp)), loc(where.location), dir(where.dir) {
    Registry::init(loc);
    generate_key_pair(tmp.file("a.key"), tmp.file("a.pub"));
    Registry(loc, "setup").trust_key(tmp.file("a.pub"));
  }
  SigningKey key(const std::string& name = "a") const { return SigningKey::load(tmp.file(name + ".key")); }
  // A new file of random bytes (distinct content each call).
  std::string model_file() {
    const std::string path = tmp.file("model-" + std::to_string(next_seed) + ".pt");
    test::write_random_file(path, 4096, next_seed++);
    return path;
  }
  VersionRecord add(Registry& reg, const std::string& model, const SigningKey* key) {
    RegisterRequest r;
    r.model = model;
    r.files["model.pt"] = model_file();
    return reg.register_version(r, key);
  }
};

std::vector<AuditEntry> entries_with(Registry& reg, const std::string& action) {
  std::vector<AuditEntry> out;
  for (auto& e : reg.audit().entries()) {
    if (e.action == action) out.push_back(e);
  }
  return out;
}

std::vector<int64_t> in_stage(Registry& reg, const std::string& model, Stage stage) {
  std::vector<int64_t> out;
  for (const auto& v : reg.versions(model)) {
    if (v.stage == stage) out.push_back(v.version);
  }
  return out;
}

int64_t count_rows(Database& db, const std::string& sql) {
  const auto rows = db.query(sql, {});
  EXPECT_EQ(rows.size(), 1u) << sql;
  return rows.empty() ? -1 : rows[0].int64(0);
}

class Store : public test::BackendTest {};
BULWARK_FOR_EACH_BACKEND(Store);

TEST_P(Store, InitCreatesTheLayoutAndRefusesToRunTwice) {
  test::TempDir tmp;
  const auto where = test::new_location(backend(), tmp);
  const std::string& dir = where.dir;
  Registry::init(where.location);
  // The database is a file in the directory on SQLite only; PostgreSQL keeps the rows.
  EXPECT_EQ(fs::is_regular_file(dir + "/registry.db"), backend() == Backend::kSqlite);
  EXPECT_TRUE(fs::is_directory(dir + "/objects"));
  EXPECT_TRUE(fs::is_directory(dir + "/trust"));
  EXPECT_TRUE(fs::is_regular_file(dir + "/log.pub"));
  EXPECT_TRUE(fs::is_regular_file(dir + "/audit.checkpoint"));
  ASSERT_TRUE(fs::is_regular_file(dir + "/log.key"));
  EXPECT_EQ(test::file_mode(dir + "/log.key"), 0600u);
  EXPECT_TRUE(Registry(where.location, "t").trust().key_ids().empty());

  const std::string key_before = test::read_all(dir + "/log.key");
  const std::string db_before = test::database_fingerprint(where, backend());
  const Error again = error_of([&] { Registry::init(where.location); });
  EXPECT_EQ(again.kind(), ErrorKind::kInvalidArgument);
  EXPECT_TRUE(contains(again.what(), "already")) << again.what();
  EXPECT_EQ(test::read_all(dir + "/log.key"), key_before) << "a second init replaced the log key";
  EXPECT_EQ(test::database_fingerprint(where, backend()), db_before);
  if (backend() == Backend::kPostgres) {
    // The same database with a new directory: still refused, and the directory is not made.
    const std::string other = tmp.file("other");
    const std::string url = where.location.substr(0, where.location.find('?')) + "?dir=" + other;
    const Error taken = error_of([&] { Registry::init(url); });
    EXPECT_EQ(taken.kind(), ErrorKind::kInvalidArgument);
    EXPECT_TRUE(contains(taken.what(), "already holds a registry")) << taken.what();
    EXPECT_FALSE(fs::exists(other));
    EXPECT_EQ(test::database_fingerprint(where, backend()), db_before);
  }

  Registry reg(where.location, "t");
  const auto log = reg.audit().entries();
  ASSERT_EQ(log.size(), 1u);
  EXPECT_EQ(log[0].action, "registry.init");
  EXPECT_TRUE(reg.audit().verify().ok);
}

TEST_P(Store, SignedVersionsAreNumberedStoredByDigestAndMoveThroughStages) {
  Env env(backend());
  Registry reg(env.loc, "tester");
  const SigningKey key = env.key();
  const std::string f1 = env.model_file(), f2 = env.model_file();
  RegisterRequest r1;
  r1.model = "fashion";
  r1.files["model.pt"] = f1;
  r1.lineage = {{"method", "pgd-at"}, {"eps", 0.1}};
  r1.metrics = {{"clean", 0.9}};
  const auto v1 = reg.register_version(r1, &key);
  RegisterRequest r2 = r1;
  r2.files["model.pt"] = f2;
  r2.parent = 1;
  const auto v2 = reg.register_version(r2, &key);

  EXPECT_EQ(v1.version, 1);
  EXPECT_EQ(v2.version, 2);
  EXPECT_EQ(v2.parent, std::optional<int64_t>(1));
  EXPECT_TRUE(v1.is_signed());
  EXPECT_EQ(v1.key_id, key.key_id());
  EXPECT_EQ(v1.stage, Stage::kNone);
  EXPECT_EQ(v1.created_by, "tester");
  EXPECT_EQ(v1.lineage["method"], "pgd-at");
  EXPECT_EQ(v1.metrics["clean"], 0.9);
  for (const auto& [v, src] : {std::pair{v1, f1}, std::pair{v2, f2}}) {
    const std::string sha = test::sha256_of_file(src);
    ASSERT_EQ(v.files.size(), 1u);
    EXPECT_EQ(v.files.at("model.pt"), sha);
    const std::string object = env.dir + "/objects/sha256/" + sha.substr(0, 2) + "/" + sha;
    ASSERT_TRUE(fs::is_regular_file(object)) << object;
    EXPECT_EQ(test::read_all(object), test::read_all(src));
    EXPECT_EQ(test::file_mode(object) & 0222, 0u) << "objects are stored read-only";
    EXPECT_EQ(reg.verify(v).at("model.pt"), object);
  }

  EXPECT_EQ(reg.promote("fashion", 1, Stage::kProduction).stage, Stage::kProduction);
  EXPECT_EQ(in_stage(reg, "fashion", Stage::kProduction), std::vector<int64_t>{1});
  EXPECT_EQ(reg.promote("fashion", 2, Stage::kProduction).stage, Stage::kProduction);
  EXPECT_EQ(in_stage(reg, "fashion", Stage::kProduction), std::vector<int64_t>{2});
  EXPECT_EQ(in_stage(reg, "fashion", Stage::kArchived), std::vector<int64_t>{1});
  EXPECT_EQ(reg.resolve(parse_reference("fashion")).version, 2);

  const auto back = reg.rollback("fashion");
  EXPECT_EQ(back.version, 1);
  EXPECT_EQ(in_stage(reg, "fashion", Stage::kProduction), std::vector<int64_t>{1});
  EXPECT_EQ(in_stage(reg, "fashion", Stage::kArchived), std::vector<int64_t>{2});
  const auto rollbacks = entries_with(reg, "registry.rollback");
  ASSERT_EQ(rollbacks.size(), 1u);
  EXPECT_EQ(rollbacks[0].subject, "fashion@1");
  EXPECT_EQ(json::parse(rollbacks[0].details)["replaced"], 2);

  // Staging is its own slot: at most one there too, and production is untouched by it.
  reg.promote("fashion", 2, Stage::kStaging);
  EXPECT_EQ(in_stage(reg, "fashion", Stage::kStaging), std::vector<int64_t>{2});
  EXPECT_EQ(in_stage(reg, "fashion", Stage::kProduction), std::vector<int64_t>{1});

  // A model with a single production version ever has nothing to roll back to.
  env.add(reg, "mnist", &key);
  const Error none = error_of([&] { reg.rollback("mnist"); });
  EXPECT_EQ(none.kind(), ErrorKind::kNotFound);
  EXPECT_TRUE(contains(none.what(), "mnist")) << none.what();
  reg.promote("mnist", 1, Stage::kProduction);
  const Error no_earlier = error_of([&] { reg.rollback("mnist"); });
  EXPECT_EQ(no_earlier.kind(), ErrorKind::kNotFound);
  EXPECT_TRUE(contains(no_earlier.what(), "earlier")) << no_earlier.what();
  EXPECT_EQ(in_stage(reg, "mnist", Stage::kProduction), std::vector<int64_t>{1});

  const Error unknown_model = error_of([&] { reg.promote("nosuchmodel", 1, Stage::kProduction); });
  EXPECT_EQ(unknown_model.kind(), ErrorKind::kNotFound);
  EXPECT_TRUE(contains(unknown_model.what(), "nosuchmodel")) << unknown_model.what();
  const Error unknown_version = error_of([&] { reg.promote("fashion", 99, Stage::kProduction); });
  EXPECT_EQ(unknown_version.kind(), ErrorKind::kNotFound);
  EXPECT_TRUE(contains(unknown_version.what(), "99")) << unknown_version.what();
  EXPECT_TRUE(contains(unknown_version.what(), "fashion")) << unknown_version.what();
  EXPECT_EQ(reg.models(), (std::vector<std::string>{"fashion", "mnist"}));
}

// A read-only handle (a server on a read-only mount) never writes: an audit entry is refused
// naming the mode, and a registry made before a table existed is refused with the fix, since a
// read-only handle cannot add the table.
TEST(Registry, AReadOnlyHandleWritesNothingAndNamesAMissingTable) {
  test::TempDir dir;
  const std::string loc = dir.file("reg");
  Registry::init(loc);
  {
    Registry ro(loc, "test", false, Registry::Access::kReadOnly);
    EXPECT_TRUE(ro.read_only());
    EXPECT_EQ(ro.audit().entries().size(), 1u);  // registry.init
    const Error refused = error_of([&] { ro.record("serve.load", "m", json::object()); });
    EXPECT_TRUE(contains(refused.what(), "read-only")) << refused.what();
  }
  EXPECT_EQ(Registry(loc, "test").audit().entries().size(), 1u);
  {
    SQLite::Database db(loc + "/registry.db", SQLite::OPEN_READWRITE);
    db.exec("DROP TABLE stage_statements");
  }
  const Error old = error_of([&] { Registry(loc, "test", false, Registry::Access::kReadOnly); });
  EXPECT_EQ(old.kind(), ErrorKind::kDataFormat);
  EXPECT_TRUE(contains(old.what(), "older bulwark")) << old.what();
  EXPECT_TRUE(contains(old.what(), "stage_statements")) << old.what();
  Registry rw(loc, "test");  // read-write: the table is added again, as on any open
  EXPECT_NO_THROW(Registry(loc, "test", false, Registry::Access::kReadOnly));
}

TEST(Registry, StagesAndReferencesParseOrNameWhatIsWrong) {
  EXPECT_EQ(parse_stage("staging"), Stage::kStaging);
  for (const Stage s : {Stage::kNone, Stage::kStaging, Stage::kProduction, Stage::kArchived}) {
    EXPECT_EQ(parse_stage(to_string(s)), s);
  }
  const Error bad = error_of([] { parse_stage("prod"); });
  EXPECT_EQ(bad.kind(), ErrorKind::kInvalidArgument);
  EXPECT_TRUE(contains(bad.what(), "'prod'")) << bad.what();
  EXPECT_TRUE(contains(bad.what(), "production")) << "the message lists the stages that exist: " << bad.what();

  const auto bare = parse_reference("fashion");
  EXPECT_EQ(bare.model, "fashion");
  EXPECT_EQ(bare.version, 0);
  EXPECT_EQ(bare.stage, Stage::kProduction);
  const auto numbered = parse_reference("fashion@3");
  EXPECT_EQ(numbered.model, "fashion");
  EXPECT_EQ(numbered.version, 3);
  EXPECT_EQ(numbered.text(), "fashion@3");
  const auto staged = parse_reference("registry:fashion@staging");
  EXPECT_EQ(staged.model, "fashion");
  EXPECT_EQ(staged.version, 0);
  EXPECT_EQ(staged.stage, Stage::kStaging);
  EXPECT_EQ(staged.text(), "fashion@staging");
  EXPECT_EQ(parse_reference("registry:fashion-v2.1_x").model, "fashion-v2.1_x");
  EXPECT_EQ(parse_reference(std::string(64, 'a')).model, std::string(64, 'a'));

  for (const std::string& text :
       std::vector<std::string>{"", "Fashion", "-fashion", ".fashion", "fa shion", "a/b", "fashion@0", "fashion@",
                                "fashion@prod", "fashion@-1", "registry:", std::string(65, 'a')}) {
    const Error e = error_of([&] { parse_reference(text); });
    EXPECT_EQ(e.kind(), ErrorKind::kInvalidArgument) << "'" << text << "': " << e.what();
  }
}

TEST_P(Store, UnsignedVersionsNeedAllowUnsignedToRegisterAndToPromote) {
  Env env(backend());
  Registry strict(env.loc, "strict");
  RegisterRequest r;
  r.model = "m";
  r.files["model.pt"] = env.model_file();
  const Error refused = error_of([&] { strict.register_version(r, nullptr); });
  EXPECT_EQ(refused.kind(), ErrorKind::kInvalidArgument);
  EXPECT_TRUE(contains(refused.what(), "allow-unsigned")) << refused.what();
  EXPECT_EQ(error_of([&] { strict.versions("m"); }).kind(), ErrorKind::kNotFound)
      << "a refused register left a version";

  Registry dev(env.loc, "dev", /*allow_unsigned=*/true);
  const auto v = dev.register_version(r, nullptr);
  EXPECT_EQ(v.version, 1);
  EXPECT_FALSE(v.is_signed());
  EXPECT_EQ(signature_check_of([&] { strict.promote("m", 1, Stage::kProduction); }), "unsigned");
  EXPECT_EQ(signature_check_of([&] { strict.promote("m", 1, Stage::kStaging); }), "unsigned");
  EXPECT_EQ(strict.resolve(parse_reference("m@1")).stage, Stage::kNone);

  const auto promoted = dev.promote("m", 1, Stage::kProduction);
  EXPECT_EQ(promoted.stage, Stage::kProduction);
  const auto promotes = entries_with(dev, "registry.promote");
  ASSERT_EQ(promotes.size(), 1u);
  EXPECT_EQ(json::parse(promotes[0].details)["unsigned"], true) << "an unsigned promotion is audited as such";
  // Serving it through a strict handle still refuses it.
  EXPECT_EQ(signature_check_of([&] { strict.verify(strict.resolve(parse_reference("m"))); }), "unsigned");
  // Unsigned is not unchecked: changed bytes fail the digest check even with allow_unsigned.
  const std::string sha = promoted.files.at("model.pt");
  const std::string object = env.dir + "/objects/sha256/" + sha.substr(0, 2) + "/" + sha;
  std::filesystem::permissions(object, std::filesystem::perms::owner_write, std::filesystem::perm_options::add);
  std::string bytes = test::read_all(object);
  bytes[10] ^= 1;
  test::write_all(object, bytes);
  EXPECT_EQ(signature_check_of([&] { dev.verify(promoted); }), "digest");
}

TEST_P(Store, ChangedObjectFailsTheDigestCheckAndIsAudited) {
  Env env(backend());
  Registry reg(env.loc, "t");
  const SigningKey key = env.key();
  const auto v = env.add(reg, "m", &key);
  const std::string object =
      env.dir + "/objects/sha256/" + v.files.at("model.pt").substr(0, 2) + "/" + v.files.at("model.pt");
  ASSERT_EQ(::chmod(object.c_str(), 0644), 0);
  std::string bytes = test::read_all(object);
  bytes[bytes.size() / 2] = static_cast<char>(bytes[bytes.size() / 2] ^ 0x01);
  test::write_all(object, bytes);

  EXPECT_EQ(signature_check_of([&] { reg.verify(v); }), "digest");
  EXPECT_EQ(signature_check_of([&] { reg.promote("m", 1, Stage::kProduction); }), "digest");
  EXPECT_EQ(reg.resolve(parse_reference("m@1")).stage, Stage::kNone)
      << "a version that fails verification was promoted";
  const auto failed = entries_with(reg, "registry.verify-failed");
  ASSERT_EQ(failed.size(), 2u);
  EXPECT_EQ(failed[0].subject, "m@1");
  EXPECT_EQ(json::parse(failed[0].details)["check"], "digest");
  EXPECT_TRUE(entries_with(reg, "registry.promote").empty());
  EXPECT_TRUE(reg.audit().verify().ok);
}

// Swaps two distinct characters near the middle of `b64`, keeping it valid base64.
std::string swap_middle(std::string b64) {
  const size_t end = b64.find('=');
  const size_t n = end == std::string::npos ? b64.size() : end;
  for (size_t i = n / 2; i + 1 < n; ++i) {
    if (b64[i] != b64[i + 1]) {
      std::swap(b64[i], b64[i + 1]);
      return b64;
    }
  }
  ADD_FAILURE() << "no two distinct characters to swap in " << b64;
  return b64;
}

void edit_bundle(Registry& reg, int64_t version, const std::function<void(json&)>& edit) {
  auto bundle = json::parse(reg.resolve(Reference{"m", version, Stage::kNone}).bundle);
  edit(bundle);
  const std::string sql = "UPDATE versions SET bundle = ? WHERE model = 'm' AND version = ?";
  ASSERT_EQ(reg.db().execute(sql, {bundle.dump(2), version}), 1);
}

TEST_P(Store, EditedBundleFailsTheSignatureCheck) {
  Env env(backend());
  Registry reg(env.loc, "t");
  const SigningKey key = env.key();
  env.add(reg, "m", &key);
  env.add(reg, "m", &key);
  env.add(reg, "m", &key);
  edit_bundle(reg, 1, [](json& b) {
    auto& sig = b["dsseEnvelope"]["signatures"][0]["sig"];
    sig = swap_middle(sig.get<std::string>());
    EXPECT_NO_THROW(base64_decode(sig.get<std::string>()));
  });
  edit_bundle(reg, 2, [](json& b) {
    auto& payload = b["dsseEnvelope"]["payload"];
    payload = swap_middle(payload.get<std::string>());
    EXPECT_NO_THROW(base64_decode(payload.get<std::string>()));
  });
  edit_bundle(reg, 3, [](json& b) { b["dsseEnvelope"]["signatures"][0]["sig"] = "not base64!"; });

  EXPECT_EQ(signature_check_of([&] { reg.verify(reg.resolve(parse_reference("m@1"))); }), "signature");
  EXPECT_EQ(signature_check_of([&] { reg.verify(reg.resolve(parse_reference("m@2"))); }), "signature");
  EXPECT_EQ(signature_check_of([&] { reg.verify(reg.resolve(parse_reference("m@3"))); }), "bundle");
  EXPECT_EQ(signature_check_of([&] { reg.promote("m", 1, Stage::kProduction); }), "signature");
  EXPECT_TRUE(in_stage(reg, "m", Stage::kProduction).empty());
}

TEST_P(Store, KeysCanBeRotatedAndUntrustedKeysFail) {
  Env env(backend());
  generate_key_pair(env.tmp.file("b.key"), env.tmp.file("b.pub"));
  Registry reg(env.loc, "t");
  const SigningKey a = env.key("a"), b = env.key("b");
  const Error not_trusted = error_of([&] { env.add(reg, "m", &b); });
  EXPECT_EQ(not_trusted.kind(), ErrorKind::kInvalidArgument);
  EXPECT_TRUE(contains(not_trusted.what(), b.key_id())) << not_trusted.what();

  EXPECT_EQ(reg.trust_key(env.tmp.file("b.pub")), b.key_id());
  EXPECT_EQ(reg.trust().key_ids().size(), 2u);
  const auto va = env.add(reg, "m", &a);
  const auto vb = env.add(reg, "m", &b);
  EXPECT_EQ(va.key_id, a.key_id());
  EXPECT_EQ(vb.key_id, b.key_id());
  EXPECT_NO_THROW(reg.verify(va));
  EXPECT_NO_THROW(reg.verify(vb));

  reg.untrust_key(a.key_id());
  EXPECT_EQ(reg.trust().key_ids(), std::vector<std::string>{b.key_id()});
  EXPECT_EQ(signature_check_of([&] { reg.verify(va); }), "untrusted-key");
  EXPECT_NO_THROW(reg.verify(vb));
  EXPECT_EQ(signature_check_of([&] { reg.promote("m", 1, Stage::kProduction); }), "untrusted-key");
  EXPECT_EQ(reg.promote("m", 2, Stage::kProduction).stage, Stage::kProduction);
  EXPECT_EQ(entries_with(reg, "keys.untrust").size(), 1u);
  EXPECT_EQ(error_of([&] { reg.untrust_key(a.key_id()); }).kind(), ErrorKind::kNotFound);
  EXPECT_EQ(error_of([&] { reg.untrust_key("nothex"); }).kind(), ErrorKind::kInvalidArgument);
}

// A pid that no process has now (gc keeps temp files of live writers).
pid_t dead_pid() {
  for (pid_t pid = 999999; pid > 900000; --pid) {
    if (::kill(pid, 0) != 0 && errno == ESRCH) return pid;
  }
  return 0;
}

TEST_P(Store, GcRemovesUnreferencedObjectsAndDeadWritersTempFilesOnly) {
  Env env(backend());
  Registry reg(env.loc, "t");
  const SigningKey key = env.key();
  const auto v = env.add(reg, "m", &key);
  const std::string kept = ObjectStore(env.dir).path_of(v.files.at("model.pt"));

  const std::string orphan_src = env.model_file();
  const std::string orphan_sha = ObjectStore(env.dir).put(orphan_src);
  const std::string orphan = ObjectStore(env.dir).path_of(orphan_sha);
  EXPECT_EQ(orphan_sha, test::sha256_of_file(orphan_src));
  const pid_t dead = dead_pid();
  ASSERT_GT(dead, 0);
  const std::string dead_tmp = env.dir + "/objects/tmp/" + std::to_string(dead) + "-1";
  const std::string live_tmp = env.dir + "/objects/tmp/" + std::to_string(::getpid()) + "-1";
  test::write_all(dead_tmp, std::string(100, 'x'));
  test::write_all(live_tmp, std::string(50, 'y'));
  const int64_t audit_before = static_cast<int64_t>(reg.audit().entries().size());

  const auto dry = reg.gc(/*dry_run=*/true);
  EXPECT_EQ(dry.removed_objects, 1);
  EXPECT_EQ(dry.removed_temp, 1);
  EXPECT_EQ(dry.bytes_freed, 4096 + 100);
  for (const auto& p : {kept, orphan, dead_tmp, live_tmp}) EXPECT_TRUE(fs::exists(p)) << "dry run removed " << p;
  EXPECT_EQ(static_cast<int64_t>(reg.audit().entries().size()), audit_before);

  const auto done = reg.gc(/*dry_run=*/false);
  EXPECT_EQ(done.removed_objects, 1);
  EXPECT_EQ(done.removed_temp, 1);
  EXPECT_FALSE(fs::exists(orphan));
  EXPECT_FALSE(fs::exists(dead_tmp));
  EXPECT_TRUE(fs::exists(kept));
  EXPECT_TRUE(fs::exists(live_tmp)) << "gc removed the temp file of a writer that is still running";
  EXPECT_NO_THROW(reg.verify(v));
  const auto gcs = entries_with(reg, "registry.gc");
  ASSERT_EQ(gcs.size(), 1u);
  EXPECT_EQ(json::parse(gcs[0].details)["removed_objects"], 1);
  EXPECT_TRUE(reg.audit().verify().ok);
}

TEST_P(Store, RunsRecordParamsMetricsTagsAndArtifact) {
  Env env(backend());
  Registry reg(env.loc, "trainer");
  const std::string artifact = env.model_file();
  std::string finished_id;
  {
    RunRecorder run(reg, "train", {{"lr", 0.5}, {"epochs", 3}, {"model", "mlp"}}, "bulwark train --epochs 3");
    run.log_metric("loss", 0.75, 1);
    run.log_metric("loss", 0.25, 2);
    run.log_metric("accuracy", 0.875);
    run.log_metric("ratio", 1.0 / 3.0, 3);  // every bit of a double comes back
    run.set_tag("dataset", "fashion");
    run.set_tag("dataset", "mnist");  // a tag set twice keeps the last value
    run.finish(artifact);
    finished_id = run.run_id();
  }
  std::string failed_id;
  {
    RunRecorder run(reg, "attack", json::object(), "bulwark attack");
    run.log_metric("robust", 0.5);
    failed_id = run.run_id();
  }  // destroyed without finish()

  ASSERT_EQ(finished_id.size(), 32u);
  const auto r = show_run(reg, finished_id.substr(0, 8));
  EXPECT_EQ(r.run_id, finished_id);
  EXPECT_EQ(r.kind, "train");
  EXPECT_EQ(r.status, "FINISHED");
  EXPECT_EQ(r.user, "trainer");
  EXPECT_EQ(r.command, "bulwark train --epochs 3");
  EXPECT_FALSE(r.end_time.empty());
  EXPECT_GE(r.end_time, r.start_time);
  EXPECT_EQ(r.params, (json{{"lr", "0.5"}, {"epochs", "3"}, {"model", "mlp"}}));
  EXPECT_EQ(r.tags, (json{{"dataset", "mnist"}}));
  ASSERT_EQ(r.metrics.size(), 4u);
  EXPECT_EQ(r.metrics[0].key, "loss");
  EXPECT_EQ(r.metrics[0].value, 0.75);
  EXPECT_EQ(r.metrics[0].step, 1);
  EXPECT_EQ(r.metrics[1].value, 0.25);
  EXPECT_EQ(r.metrics[1].step, 2);
  EXPECT_EQ(r.metrics[2].key, "accuracy");
  EXPECT_EQ(r.metrics[2].step, 0);
  EXPECT_EQ(r.metrics[3].value, 1.0 / 3.0);
  EXPECT_EQ(r.artifact, artifact);
  EXPECT_EQ(r.artifact_sha256, test::sha256_of_file(artifact));

  const auto f = show_run(reg, failed_id);
  EXPECT_EQ(f.status, "FAILED");
  EXPECT_TRUE(f.artifact.empty());
  ASSERT_EQ(f.metrics.size(), 1u);

  EXPECT_EQ(list_runs(reg, "", 10).size(), 2u);
  const auto attacks = list_runs(reg, "attack", 10);
  ASSERT_EQ(attacks.size(), 1u);
  EXPECT_EQ(attacks[0].run_id, failed_id);
  EXPECT_TRUE(attacks[0].metrics.empty()) << "list leaves metrics out";
  const auto trains = list_runs(reg, "train", 10);
  ASSERT_EQ(trains.size(), 1u);
  EXPECT_EQ(trains[0].run_id, finished_id);
  EXPECT_TRUE(list_runs(reg, "detect-evaluate", 10).empty());
  EXPECT_EQ(list_runs(reg, "", 1).size(), 1u);

  EXPECT_EQ(error_of([&] { show_run(reg, "xyz"); }).kind(), ErrorKind::kInvalidArgument);
  const std::string absent = "0123456789abcdef0123456789abcdef";
  ASSERT_NE(finished_id, absent);
  ASSERT_NE(failed_id, absent);
  EXPECT_EQ(error_of([&] { show_run(reg, absent); }).kind(), ErrorKind::kNotFound);
  EXPECT_EQ(error_of([&] { RunRecorder(reg, "train", json::array(), "x"); }).kind(), ErrorKind::kInvalidArgument);
}

// Runs `work(child)` in `children` forked processes at once (they start together, once the parent
// closes a pipe) and expects each to exit 0 within 60 s; one that does not is killed and fails the
// test. `work` opens its own Registry: no database connection crosses a fork.
void in_child_processes(int children, const std::function<void(int)>& work) {
  int start[2];
  ASSERT_EQ(::pipe(start), 0);
  std::fflush(nullptr);
  std::vector<pid_t> pids;
  for (int c = 0; c < children; ++c) {
    const pid_t pid = ::fork();
    if (pid == 0) {
      ::close(start[1]);
      char byte = 0;
      while (::read(start[0], &byte, 1) < 0 && errno == EINTR) {
      }
      int code = 0;
      try {
        work(c);
      } catch (const std::exception& e) {
        std::fprintf(stderr, "child %d: %s\n", c, e.what());
        code = 1;
      }
      ::_exit(code);
    }
    if (pid < 0) {
      ADD_FAILURE() << "fork failed";
      break;
    }
    pids.push_back(pid);
  }
  ::close(start[1]);  // go: the children's reads return end-of-file
  ::close(start[0]);
  ASSERT_EQ(pids.size(), static_cast<size_t>(children));
  std::map<pid_t, int> status;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (status.size() < pids.size() && std::chrono::steady_clock::now() < deadline) {
    for (const pid_t pid : pids) {
      int st = 0;
      if (status.count(pid) == 0 && ::waitpid(pid, &st, WNOHANG) == pid) status[pid] = st;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  for (const pid_t pid : pids) {
    if (status.count(pid) != 0) continue;
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
    ADD_FAILURE() << "child " << pid << " did not finish within 60 s";
  }
  for (const auto& [pid, st] : status) {
    EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << "child " << pid << " failed, status " << st;
  }
}

// Each child promotes versions 1..3 in turn, starting at a different one.
TEST_P(Store, TwoProcessesPromotingConcurrentlyLoseNoUpdate) {
  constexpr int kRounds = 15;
  constexpr int kChildren = 2;
  Env env(backend());
  {
    Registry reg(env.loc, "setup");
    const SigningKey key = env.key();
    for (int i = 0; i < 3; ++i) env.add(reg, "m", &key);
  }  // closed: no database connection crosses the fork
  in_child_processes(kChildren, [&](int child) {
    Registry reg(env.loc, "child-" + std::to_string(child));
    for (int k = 0; k < kRounds; ++k) reg.promote("m", 1 + (k + child) % 3, Stage::kProduction);
  });

  Registry reg(env.loc, "check");
  const auto verdict = reg.audit().verify();
  EXPECT_TRUE(verdict.ok) << verdict.problem;
  // On PostgreSQL checkpoint writers take turns, so the last one written covers every entry.
  if (backend() == Backend::kPostgres) {
    EXPECT_EQ(verdict.uncovered, 0);
  }
  const auto production = in_stage(reg, "m", Stage::kProduction);
  ASSERT_EQ(production.size(), 1u);

  // Replay the promotions in audit order: each must have seen the state the one before it left.
  const auto promotes = entries_with(reg, "registry.promote");
  ASSERT_EQ(promotes.size(), static_cast<size_t>(kChildren * kRounds)) << "a promotion was lost";
  std::map<int64_t, std::string> stage{{1, "none"}, {2, "none"}, {3, "none"}};
  int64_t holder = 0;
  int64_t archived_count = 0;
  for (const auto& e : promotes) {
    const int64_t v = parse_reference(e.subject).version;
    const json d = json::parse(e.details);
    EXPECT_EQ(d["from"], stage[v]) << "entry " << e.seq;
    EXPECT_EQ(d["to"], "production") << "entry " << e.seq;
    if (holder != 0 && holder != v) {
      EXPECT_EQ(d.value("archived", int64_t{0}), holder) << "entry " << e.seq;
      stage[holder] = "archived";
      ++archived_count;
    } else {
      EXPECT_FALSE(d.contains("archived")) << "entry " << e.seq;
    }
    stage[v] = "production";
    holder = v;
  }
  EXPECT_EQ(production[0], holder);
  for (const auto& v : reg.versions("m")) EXPECT_EQ(to_string(v.stage), stage[v.version]) << v.ref();
  EXPECT_EQ(count_rows(reg.db(), "SELECT COUNT(*) FROM stage_changes WHERE to_stage = 'production'"),
            kChildren * kRounds);
  EXPECT_EQ(count_rows(reg.db(), "SELECT COUNT(*) FROM stage_changes WHERE to_stage = 'archived'"), archived_count);
  EXPECT_EQ(count_rows(reg.db(), "SELECT COUNT(*) FROM stage_changes"), kChildren * kRounds + archived_count);
  std::set<std::string> actors;
  for (const auto& e : promotes) actors.insert(e.actor);
  EXPECT_EQ(actors, (std::set<std::string>{"child-0", "child-1"}));
  int handovers = 0;
  for (size_t i = 1; i < promotes.size(); ++i) handovers += promotes[i].actor != promotes[i - 1].actor;
  std::cout << "[ info     ] the lock passed between the children " << handovers << " times" << std::endl;
}


// Both children add versions to one shared model (and to one of their own) at once: every
// registration gets its own number, with no gap, and its own audit entry.
TEST_P(Store, TwoProcessesRegisteringConcurrentlyGetDistinctVersionNumbers) {
  constexpr int kEach = 6;
  Env env(backend());
  std::vector<std::string> files;
  for (int i = 0; i < 4 * kEach; ++i) files.push_back(env.model_file());
  in_child_processes(2, [&](int child) {
    Registry reg(env.loc, "child-" + std::to_string(child));
    const SigningKey key = env.key();
    for (int k = 0; k < kEach; ++k) {
      for (const std::string& model : {std::string("shared"), "own-" + std::to_string(child)}) {
        RegisterRequest r;
        r.model = model;
        r.files["model.pt"] = files[static_cast<size_t>((child * kEach + k) * 2 + (model == "shared" ? 0 : 1))];
        reg.register_version(r, &key);
      }
    }
  });
  Registry reg(env.loc, "check");
  EXPECT_EQ(reg.models(), (std::vector<std::string>{"own-0", "own-1", "shared"}));
  const std::map<std::string, int> expected{{"shared", 2 * kEach}, {"own-0", kEach}, {"own-1", kEach}};
  for (const auto& [model, count] : expected) {
    const auto versions = reg.versions(model);
    ASSERT_EQ(static_cast<int>(versions.size()), count) << model;
    std::set<std::string> digests;
    for (int i = 0; i < count; ++i) {
      EXPECT_EQ(versions[static_cast<size_t>(i)].version, i + 1) << model;
      EXPECT_NO_THROW(reg.verify(versions[static_cast<size_t>(i)])) << versions[static_cast<size_t>(i)].ref();
      digests.insert(versions[static_cast<size_t>(i)].files.at("model.pt"));
    }
    EXPECT_EQ(static_cast<int>(digests.size()), count) << model << ": two versions hold the same file";
  }
  EXPECT_EQ(entries_with(reg, "registry.register").size(), static_cast<size_t>(4 * kEach));
  const auto verdict = reg.audit().verify();
  EXPECT_TRUE(verdict.ok) << verdict.problem;
}

TEST_P(Store, OpeningALocationWithoutARegistryNamesWhatIsMissing) {
  test::TempDir tmp;
  const auto where = test::new_location(backend(), tmp);
  const Error no_objects = error_of([&] { Registry(where.location, "t"); });
  EXPECT_EQ(no_objects.kind(), ErrorKind::kNotFound);
  EXPECT_TRUE(contains(no_objects.what(), where.dir + "/objects")) << no_objects.what();
  ObjectStore::create(where.dir);
  const Error no_database = error_of([&] { Registry(where.location, "t"); });
  EXPECT_EQ(no_database.kind(), ErrorKind::kNotFound);
  EXPECT_TRUE(contains(no_database.what(), "registry init")) << no_database.what();
}

TEST(RegistryLocation, DirectoriesAndPostgresUrlsParse) {
  const auto d = parse_location("some/dir");
  EXPECT_EQ(d.backend, Backend::kSqlite);
  EXPECT_EQ(d.dir, "some/dir");
  EXPECT_EQ(d.display, "some/dir");

  const auto p = parse_location(
      "postgresql://alice:s3cret@db.internal:5433/reg?sslmode=require&dir=/mnt/shared%20reg&password=x");
  EXPECT_EQ(p.backend, Backend::kPostgres);
  EXPECT_EQ(p.dir, "/mnt/shared reg");
  EXPECT_EQ(p.conninfo, "postgresql://alice:s3cret@db.internal:5433/reg?sslmode=require&password=x&connect_timeout=10");
  EXPECT_EQ(p.display,
            "postgresql://alice:***@db.internal:5433/reg?sslmode=require&dir=/mnt/shared%20reg&password=***");
  const auto t = parse_location("postgres://h/db?connect_timeout=3&dir=d");
  EXPECT_EQ(t.conninfo, "postgres://h/db?connect_timeout=3");
  EXPECT_EQ(t.dir, "d");

  const Error no_dir = error_of([] { parse_location("postgresql://h/db?sslmode=disable"); });
  EXPECT_EQ(no_dir.kind(), ErrorKind::kInvalidArgument);
  EXPECT_TRUE(contains(no_dir.what(), "?dir=")) << no_dir.what();
  for (const std::string bad : {"", "postgresql://h/db?dir=%zz", "s3://bucket/registry"}) {
    EXPECT_EQ(error_of([&] { parse_location(bad); }).kind(), ErrorKind::kInvalidArgument) << bad;
  }
}

TEST(RegistryLocation, UnreachablePostgresIsUnavailableAndInitWritesNothing) {
  test::TempDir tmp;
  const std::string dir = tmp.file("reg");
  // Port 1 on loopback: refused at once. The password must not appear in the message.
  const Error e = error_of([&] { Registry::init("postgresql://bulwark:hunter2@127.0.0.1:1/x?dir=" + dir); });
  EXPECT_EQ(e.kind(), ErrorKind::kUnavailable) << e.what();
  EXPECT_TRUE(contains(e.what(), "cannot connect")) << e.what();
  EXPECT_FALSE(contains(e.what(), "hunter2")) << e.what();
  EXPECT_FALSE(fs::exists(dir));
}

}  // namespace
}  // namespace bulwark::registry
