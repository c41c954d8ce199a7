// Black-box tests of `bulwark registry | keys | audit` through the real binary, on SQLite and on
// PostgreSQL: the audit trail of a register → promote → rollback flow, a signature checked with
// python3 and openssl alone, bad input that fails with the right exit code and leaves the registry
// untouched, and two CLI processes promoting at once.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <thread>

#include "backends.h"
#include "registry/store.h"
#include "registry_test_util.h"

namespace bulwark::registry {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using test::contains;

// A registry made through the library (the CLI parts under test come after), with key "k" trusted.
struct Env {
  Backend backend;
  test::TempDir tmp;
  test::Location where;
  std::string loc, dir;
  std::string key = tmp.file("k.key"), pub = tmp.file("k.pub");
  explicit Env(Backend b) : backend(b), where(test::new_location(b, tmp)), loc(where.location), dir(where.dir) {
    Registry::init(loc);
    generate_key_pair(key, pub);
    Registry(loc, "setup").trust_key(pub);
  }
  test::CliResult bulwark(const std::string& args) const { return test::run_bulwark(args, tmp); }
  std::string reg_flag() const { return " --registry '" + loc + "'"; }  // quoted: a URL has ? and &
};

class RegistryCli : public test::BackendTest {};
BULWARK_FOR_EACH_BACKEND(RegistryCli);

// Every path under the directory with its type, mode, size and mtime, then the database's contents.
std::string snapshot(const Env& env) {
  const std::string& dir = env.dir;
  std::vector<std::string> lines;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    struct stat st {};
    ::lstat(e.path().c_str(), &st);
    std::ostringstream line;
    line << fs::relative(e.path(), dir).string() << " mode=" << std::oct << st.st_mode << std::dec
         << " size=" << (S_ISREG(st.st_mode) ? st.st_size : 0) << " mtime=" << st.st_mtim.tv_sec << "."
         << st.st_mtim.tv_nsec;
    lines.push_back(line.str());
  }
  std::sort(lines.begin(), lines.end());
  std::string out;
  for (const auto& l : lines) out += l + "\n";
  return out + test::database_fingerprint(env.where, env.backend) + "\n";
}

TEST_P(RegistryCli, RegisterPromoteRollbackAreAuditedAndTamperingIsReported) {
  Env env(backend());
  const std::string f1 = env.tmp.file("m1.pt"), f2 = env.tmp.file("m2.pt");
  test::write_random_file(f1, 5000, 1);
  test::write_random_file(f2, 5000, 2);
  const auto r1 = env.bulwark("registry register m " + f1 + " --key " + env.key + env.reg_flag());
  ASSERT_EQ(r1.exit_code, 0) << r1.err;
  const auto r2 =
      env.bulwark("registry register m " + f2 + " --method pgd-at --key " + env.key + env.reg_flag() + " --json");
  ASSERT_EQ(r2.exit_code, 0) << r2.err;
  const json v2 = json::parse(r2.out);
  EXPECT_EQ(v2["version"], 2);
  EXPECT_EQ(v2["signed"], true);
  EXPECT_EQ(v2["files"]["model.pt"], test::sha256_of_file(f2));
  EXPECT_EQ(v2["lineage"]["method"], "pgd-at");
  for (const std::string ref : {"m@1", "m@2"}) {
    const auto p = env.bulwark("registry promote " + ref + " --key " + env.key + env.reg_flag());
    ASSERT_EQ(p.exit_code, 0) << ref << ": " << p.err;
  }
  const auto rb = env.bulwark("--json registry rollback m --key " + env.key + env.reg_flag());
  ASSERT_EQ(rb.exit_code, 0) << rb.err;
  EXPECT_EQ(json::parse(rb.out)["version"], 1);
  EXPECT_EQ(json::parse(rb.out)["stage"], "production");

  const auto show = env.bulwark("audit show" + env.reg_flag() + " --json");
  ASSERT_EQ(show.exit_code, 0) << show.err;
  const json log = json::parse(show.out);
  ASSERT_EQ(log.size(), 7u) << log.dump(2);
  const std::vector<std::pair<std::string, std::string>> steps = {
      {"registry.init", env.loc},   {"keys.trust", SigningKey::load(env.key).key_id()},
      {"registry.register", "m@1"}, {"registry.register", "m@2"},
      {"registry.promote", "m@1"},  {"registry.promote", "m@2"},
      {"registry.rollback", "m@1"}};
  for (size_t i = 0; i < steps.size(); ++i) {
    EXPECT_EQ(log[i]["seq"], i + 1);
    EXPECT_EQ(log[i]["action"], steps[i].first) << "entry " << i + 1;
    EXPECT_EQ(log[i]["subject"], steps[i].second) << "entry " << i + 1;
    if (i >= 2) {
      EXPECT_EQ(log[i]["actor"].get<std::string>().rfind("local:", 0), 0u) << log[i];
    }
  }
  EXPECT_EQ(log[3]["details"]["files"]["model.pt"], test::sha256_of_file(f2));
  EXPECT_EQ(log[4]["details"]["to"], "production");
  EXPECT_EQ(log[5]["details"]["archived"], 1);
  EXPECT_EQ(log[6]["details"]["replaced"], 2);
  EXPECT_EQ(log[6]["details"]["from"], "archived");

  const auto ok = env.bulwark("audit verify" + env.reg_flag());
  EXPECT_EQ(ok.exit_code, 0) << ok.err;
  const std::string tamper = "UPDATE audit SET actor = actor || actor WHERE seq = 3";
  const auto edit = test::run_command(test::sql_shell_command(env.where, backend(), tamper));
  ASSERT_EQ(edit.exit_code, 0) << edit.output;
  const auto bad = env.bulwark("audit verify" + env.reg_flag());
  EXPECT_EQ(bad.exit_code, 1) << bad.out << bad.err;
  EXPECT_TRUE(contains(bad.err, "entry 3")) << bad.err;
}

// `registry export`: the directory model_signing verifies — the version's files under their names
// in the version, its bundle as model.sig, nothing else; the statement's resources name exactly
// those files (oms_extract.py reads them with Python alone), and a tampered object is not exported.
TEST_P(RegistryCli, ExportWritesTheModelSigningLayout) {
  Env env(backend());
  const std::string model = env.tmp.file("src.pt"), calibration = env.tmp.file("src.detect");
  test::write_random_file(model, 6000, 7);
  test::write_random_file(calibration, 700, 8);
  ASSERT_EQ(env.bulwark("registry register m " + model + " --calibration " + calibration + " --key " + env.key +
                        env.reg_flag()).exit_code,
            0);
  const std::string out = env.tmp.file("export");
  const auto r = env.bulwark("registry export m@1 " + out + env.reg_flag());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(out)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"model.detect", "model.pt", "model.sig"}));
  EXPECT_EQ(test::read_all(out + "/model.pt"), test::read_all(model));
  EXPECT_EQ(test::read_all(out + "/model.detect"), test::read_all(calibration));
  EXPECT_EQ(test::read_all(out + "/model.sig") + "\n", env.bulwark("registry show m@1 --bundle" + env.reg_flag()).out);
  const std::string script = std::string(BULWARK_FIXTURES_DIR) + "/../registry/oms_extract.py";
  const auto py = test::run_command("python3 " + script + " " + out + "/model.sig " + env.tmp.path());
  ASSERT_EQ(py.exit_code, 0) << py.output;
  const json s = json::parse(py.output);
  for (const std::string name : {"model.pt", "model.detect"}) {
    EXPECT_EQ(s["resources"][name], test::sha256_of_file(out + "/" + name)) << name;
  }
  EXPECT_EQ(s["resources"].size(), 2u);

  Registry reg(env.loc, "test");
  const std::string object = reg.objects().path_of(reg.resolve(parse_reference("m@1")).files.at("model.pt"));
  fs::permissions(object, fs::perms::owner_write, fs::perm_options::add);
  test::write_all(object, "not the signed bytes");
  const auto refused = env.bulwark("registry export m@1 " + env.tmp.file("export2") + env.reg_flag());
  EXPECT_EQ(refused.exit_code, 1) << refused.out;
  EXPECT_TRUE(contains(refused.err, "(digest)")) << refused.err;
  EXPECT_FALSE(fs::exists(env.tmp.file("export2/model.pt")));
}

// `registry import-signed`: a directory with a model_signing signature (here one `registry export`
// wrote, the same format) becomes a version whose signature is the imported one; a subject that is
// not the model's name, a file changed after signing and an untrusted signer are refused.
TEST_P(RegistryCli, ImportSignedChecksTheSignatureItBrings) {
  Env env(backend());
  const std::string model = env.tmp.file("src.pt");
  test::write_random_file(model, 5000, 9);
  ASSERT_EQ(env.bulwark("registry register m " + model + " --key " + env.key + env.reg_flag()).exit_code, 0);
  const std::string dir = env.tmp.file("m");
  ASSERT_EQ(env.bulwark("registry export m@1 " + dir + env.reg_flag()).exit_code, 0);
  const auto other_name = env.bulwark("registry import-signed other " + dir + env.reg_flag());
  EXPECT_EQ(other_name.exit_code, 1) << other_name.out;
  EXPECT_TRUE(contains(other_name.err, "subject is 'm', not 'other'")) << other_name.err;
  const auto ok = env.bulwark("--json registry import-signed m " + dir + " --parent 1" + env.reg_flag());
  ASSERT_EQ(ok.exit_code, 0) << ok.err;
  const json v = json::parse(ok.out);
  EXPECT_EQ(v["version"], 2);
  EXPECT_EQ(v["signed"], true);
  EXPECT_EQ(v["key_id"], SigningKey::load(env.key).key_id());
  EXPECT_EQ(env.bulwark("registry show m@2 --bundle" + env.reg_flag()).out, test::read_all(dir + "/model.sig") + "\n");
  EXPECT_EQ(env.bulwark("registry verify m@2" + env.reg_flag()).exit_code, 0);

  test::write_all(dir + "/model.pt", test::read_all(dir + "/model.pt") + "x");
  const auto changed = env.bulwark("registry import-signed m " + dir + env.reg_flag());
  EXPECT_EQ(changed.exit_code, 1) << changed.out;
  EXPECT_TRUE(contains(changed.err, "model.pt")) << changed.err;
  {
    Registry reg(env.loc, "test");
    reg.untrust_key(SigningKey::load(env.key).key_id());
  }
  test::write_all(dir + "/model.pt", test::read_all(model));  // the signed bytes again, the signer untrusted
  const auto untrusted = env.bulwark("registry import-signed m " + dir + env.reg_flag());
  EXPECT_EQ(untrusted.exit_code, 1) << untrusted.out;
  EXPECT_TRUE(contains(untrusted.err, "trust")) << untrusted.err;
  EXPECT_EQ(json::parse(env.bulwark("--json registry list m" + env.reg_flag()).out).size(), 2u);
}

TEST_P(RegistryCli, BundleVerifiesWithOpensslAndPythonAlone) {
  Env env(backend());
  const std::string model = env.tmp.file("model.pt"), calibration = env.tmp.file("model.detect");
  test::write_random_file(model, 6000, 3);
  test::write_random_file(calibration, 700, 4);
  const auto reg = env.bulwark("registry register m " + model + " --calibration " + calibration + " --key " + env.key +
                               env.reg_flag());
  ASSERT_EQ(reg.exit_code, 0) << reg.err;
  const auto show = env.bulwark("registry show m@1 --bundle" + env.reg_flag());
  ASSERT_EQ(show.exit_code, 0) << show.err;
  const std::string bundle = env.tmp.file("bundle.json");
  test::write_all(bundle, show.out);

  const std::string script = std::string(BULWARK_FIXTURES_DIR) + "/../registry/oms_extract.py";
  const auto py = test::run_command("python3 " + script + " " + bundle + " " + env.tmp.path());
  ASSERT_EQ(py.exit_code, 0) << py.output;
  const json s = json::parse(py.output);
  EXPECT_EQ(s["payload_type"], "application/vnd.in-toto+json");
  EXPECT_EQ(s["signatures"], 1);
  EXPECT_EQ(s["subjects"], 1);
  EXPECT_EQ(s["subject_name"], "m");
  EXPECT_EQ(s["subject_sha256"], s["computed_root_sha256"]);
  EXPECT_EQ(s["resources_sorted"], true);
  EXPECT_EQ(s["algorithms"], json::array({"sha256"}));
  EXPECT_EQ(s["key_hint"], test::sha256_of_file(env.pub));
  const auto sha256sum = [](const std::string& path) {
    const auto r = test::run_command("sha256sum " + path);
    EXPECT_EQ(r.exit_code, 0) << r.output;
    return r.output.substr(0, 64);
  };
  ASSERT_EQ(s["resources"].size(), 2u) << s.dump();
  EXPECT_EQ(s["resources"]["model.pt"], sha256sum(model));
  EXPECT_EQ(s["resources"]["model.detect"], sha256sum(calibration));

  const std::string openssl =
      "openssl dgst -sha256 -verify " + env.pub + " -signature " + env.tmp.file("sig.der") + " ";
  const auto good = test::run_command(openssl + env.tmp.file("pae.bin"));
  EXPECT_EQ(good.exit_code, 0) << good.output;
  EXPECT_TRUE(contains(good.output, "Verified OK")) << good.output;
  const auto tampered = test::run_command(openssl + env.tmp.file("pae-tampered.bin"));
  EXPECT_NE(tampered.exit_code, 0) << tampered.output;
  EXPECT_FALSE(contains(tampered.output, "Verified OK")) << tampered.output;
}

TEST_P(RegistryCli, BadInputFailsWithTheRightCodeAndChangesNothing) {
  Env env(backend());
  const std::string model = env.tmp.file("m.pt");
  test::write_random_file(model, 3000, 5);
  {
    Registry reg(env.loc, "setup");
    RegisterRequest r;
    r.model = "m";
    r.files["model.pt"] = model;
    const SigningKey key = SigningKey::load(env.key);
    reg.register_version(r, &key);
  }
  const std::string garbage = env.tmp.file("garbage.key");
  test::write_all(garbage, "this is not a PEM key\n");
  ASSERT_EQ(::chmod(garbage.c_str(), 0600), 0);
  const std::string loose = env.tmp.file("loose.key");
  generate_key_pair(loose, env.tmp.file("loose.pub"));
  ASSERT_EQ(::chmod(loose.c_str(), 0644), 0);
  const std::string loose_trusted = env.tmp.file("other.key");  // a fine key file, but not trusted
  generate_key_pair(loose_trusted, env.tmp.file("other.pub"));

  struct Case {
    std::string args;
    int exit_code;
    std::vector<std::string> message;
  };
  const std::vector<Case> cases = {
      {"registry show nope@1", 1, {"nope"}},
      {"registry show m@99", 1, {"99"}},
      {"registry promote m@1 --stage prod", 2, {"'prod'"}},
      {"registry promote m@1", 2, {"needs --key", "operator key"}},
      {"registry promote m@1 --key " + loose_trusted, 2, {"not in the registry's trust list"}},
      {"registry rollback m", 2, {"needs --key"}},
      {"registry export m@1 " + env.tmp.path(), 2, {"not empty"}},
      {"registry register m " + model + " --key " + garbage, 1, {garbage}},
      {"registry register m " + model + " --key " + loose, 2, {loose, "permissions"}},
  };
  const auto check = [&](const Case& c) {
    const std::string before = snapshot(env);
    const auto r = env.bulwark(c.args + env.reg_flag());
    EXPECT_EQ(r.exit_code, c.exit_code) << c.args << "\n" << r.err;
    for (const auto& part : c.message) EXPECT_TRUE(contains(r.err, part)) << c.args << ": " << r.err;
    EXPECT_EQ(snapshot(env), before) << c.args << " changed the registry";
  };
  for (const auto& c : cases) check(c);

  fs::remove_all(env.dir + "/objects");
  check({"registry list", 1, {env.dir + "/objects"}});
}

// Starts `sh -c script` in a process group of its own, stderr to `log`.
pid_t start_shell(const std::string& script, const std::string& log) {
  const std::string command = "exec 2>" + log + "; " + script;
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::setpgid(0, 0);
    ::execl("/bin/sh", "sh", "-c", command.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  return pid;
}

// Waits for every shell until `deadline`; exit codes by index, -1 for one killed at the deadline.
std::vector<int> wait_shells(const std::vector<pid_t>& pids, std::chrono::seconds deadline) {
  std::vector<int> codes(pids.size(), -2);
  const auto end = std::chrono::steady_clock::now() + deadline;
  size_t done = 0;
  while (done < pids.size() && std::chrono::steady_clock::now() < end) {
    for (size_t i = 0; i < pids.size(); ++i) {
      int st = 0;
      if (codes[i] == -2 && ::waitpid(pids[i], &st, WNOHANG) == pids[i]) {
        codes[i] = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        ++done;
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  for (size_t i = 0; i < pids.size(); ++i) {
    if (codes[i] != -2) continue;
    ::kill(-pids[i], SIGKILL);
    ::waitpid(pids[i], nullptr, 0);
    codes[i] = -1;
  }
  return codes;
}

// Two shells each run `bulwark registry promote` in a loop against one registry at once: every
// promotion lands, each saw the stages the one before it left (replayed from the audit log),
// exactly one version ends in production, and `bulwark audit verify` passes over every entry.
TEST_P(RegistryCli, TwoCliProcessesPromotingAtOnceLeaveAConsistentRegistry) {
  constexpr int kRounds = 6;
  Env env(backend());
  {
    Registry reg(env.loc, "setup");
    const SigningKey key = SigningKey::load(env.key);
    for (int i = 0; i < 3; ++i) {
      RegisterRequest r;
      r.model = "m";
      r.files["model.pt"] = env.tmp.file("m" + std::to_string(i) + ".pt");
      test::write_random_file(r.files["model.pt"], 3000, 40 + static_cast<uint64_t>(i));
      reg.register_version(r, &key);
    }
  }
  std::vector<pid_t> shells;
  for (int c = 0; c < 2; ++c) {
    std::string script;
    for (int k = 0; k < kRounds; ++k) {
      script += std::string(BULWARK_BIN) + " registry promote m@" + std::to_string(1 + (k + c) % 3) + " --key " + env.key + env.reg_flag() +
                " >/dev/null || exit 1; ";
    }
    shells.push_back(start_shell(script, env.tmp.file("shell" + std::to_string(c) + ".err")));
  }
  const auto codes = wait_shells(shells, std::chrono::seconds(180));
  for (size_t c = 0; c < codes.size(); ++c) {
    EXPECT_EQ(codes[c], 0) << "shell " << c << (codes[c] == -1 ? " did not finish in 180 s" : " failed") << ":\n"
                           << test::read_all(env.tmp.file("shell" + std::to_string(c) + ".err"));
  }

  const auto verify = env.bulwark("--json audit verify" + env.reg_flag());
  ASSERT_EQ(verify.exit_code, 0) << verify.out << verify.err;
  const json verdict = json::parse(verify.out);
  EXPECT_EQ(verdict["ok"], true) << verify.out;
  EXPECT_EQ(verdict["entries"], 5 + 2 * kRounds) << "init, trust, 3 registers and every promotion";
  if (backend() == Backend::kPostgres) {
    EXPECT_EQ(verdict["uncovered"], 0) << "the last checkpoint covers every entry";
  }

  const auto show = env.bulwark("--json audit show" + env.reg_flag());
  ASSERT_EQ(show.exit_code, 0) << show.err;
  std::map<int64_t, std::string> stage{{1, "none"}, {2, "none"}, {3, "none"}};
  int64_t holder = 0;
  int promotes = 0;
  for (const auto& e : json::parse(show.out)) {
    if (e["action"] != "registry.promote") continue;
    ++promotes;
    const int64_t v = parse_reference(e["subject"].get<std::string>()).version;
    EXPECT_EQ(e["details"]["from"], stage[v]) << e.dump();
    if (holder != 0 && holder != v) {
      EXPECT_EQ(e["details"].value("archived", int64_t{0}), holder) << e.dump();
      stage[holder] = "archived";
    }
    stage[v] = "production";
    holder = v;
  }
  EXPECT_EQ(promotes, 2 * kRounds);
  const auto list = env.bulwark("--json registry list m" + env.reg_flag());
  ASSERT_EQ(list.exit_code, 0) << list.err;
  int production = 0;
  for (const auto& v : json::parse(list.out)) {
    production += v["stage"] == "production";
    EXPECT_EQ(v["stage"], stage[v["version"].get<int64_t>()]) << v.dump();
  }
  EXPECT_EQ(production, 1);
}

// A re-keyed log: someone with write access replaces log.key/log.pub with their own pair; every
// checkpoint written after that verifies against the registry's own log.pub, so `audit verify`
// alone passes. With the log key pinned from a copy kept outside (`--log-key`), it fails and says
// the log was re-keyed.
TEST_P(RegistryCli, AReKeyedLogFailsAgainstThePinnedLogKey) {
  Env env(backend());
  const std::string f1 = env.tmp.file("m1.pt");
  test::write_random_file(f1, 5000, 1);
  ASSERT_EQ(env.bulwark("registry register m " + f1 + " --key " + env.key + env.reg_flag()).exit_code, 0);
  const std::string pinned = env.tmp.file("log-kept-elsewhere.pub");
  fs::copy_file(env.dir + "/log.pub", pinned);
  const auto before = env.bulwark("audit verify --log-key " + pinned + env.reg_flag());
  EXPECT_EQ(before.exit_code, 0) << before.err;
  EXPECT_TRUE(contains(before.out, "log key pinned")) << before.out;
  // The attacker's own pair, then any append: the checkpoint is now signed by their key.
  generate_key_pair(env.tmp.file("evil.key"), env.tmp.file("evil.pub"));
  fs::copy_file(env.tmp.file("evil.key"), env.dir + "/log.key", fs::copy_options::overwrite_existing);
  fs::copy_file(env.tmp.file("evil.pub"), env.dir + "/log.pub", fs::copy_options::overwrite_existing);
  // Keys swapped alone: the next append finds the checkpoint no longer verifies and refuses.
  const auto refused = env.bulwark("registry promote m@1 --key " + env.key + env.reg_flag());
  EXPECT_EQ(refused.exit_code, 1) << refused.out;
  EXPECT_TRUE(contains(refused.err, "checkpoint does not verify with the log key")) << refused.err;
  // So the attacker re-signs the checkpoint with their key too; then appends go on.
  const std::string note = test::read_all(env.dir + "/audit.checkpoint");
  const std::string body = note.substr(0, note.find("\n\n") + 1);
  const std::string origin = body.substr(0, body.find('\n'));
  test::write_all(env.dir + "/audit.checkpoint", sign_note(body, origin, SigningKey::load(env.dir + "/log.key")));
  ASSERT_EQ(env.bulwark("registry promote m@1 --key " + env.key + env.reg_flag()).exit_code, 0);
  const auto unpinned = env.bulwark("audit verify" + env.reg_flag());
  EXPECT_EQ(unpinned.exit_code, 0) << "without a pinned key the re-keyed log verifies (what the pin is for): "
                                   << unpinned.err;
  const auto pinned_check = env.bulwark("audit verify --log-key " + pinned + env.reg_flag());
  EXPECT_EQ(pinned_check.exit_code, 1) << pinned_check.out;
  EXPECT_TRUE(contains(pinned_check.err, "re-keyed")) << pinned_check.err;
}

TEST(RegistryKeysCli, KeysGenWritesAPrivateKeyOnlyTheOwnerCanReadAndNeverOverwrites) {
  test::TempDir tmp;
  const std::string prefix = tmp.file("signer");
  const auto gen = test::run_bulwark("keys gen --json --out " + prefix, tmp);
  ASSERT_EQ(gen.exit_code, 0) << gen.err;
  EXPECT_EQ(test::file_mode(prefix + ".key"), 0600u);
  const mode_t mask = ::umask(0);
  ::umask(mask);
  EXPECT_EQ(test::file_mode(prefix + ".pub"), 0644u & ~mask);
  const json out = json::parse(gen.out);
  EXPECT_EQ(out["key_id"], test::sha256_of_file(prefix + ".pub"));
  const auto verify_pub = test::run_command("openssl pkey -pubin -in " + prefix + ".pub -noout -text");
  EXPECT_EQ(verify_pub.exit_code, 0) << verify_pub.output;
  EXPECT_TRUE(contains(verify_pub.output, "prime256v1") || contains(verify_pub.output, "P-256")) << verify_pub.output;

  const std::string key_before = test::read_all(prefix + ".key"), pub_before = test::read_all(prefix + ".pub");
  const auto again = test::run_bulwark("keys gen --out " + prefix, tmp);
  EXPECT_EQ(again.exit_code, 2) << again.err;
  EXPECT_TRUE(contains(again.err, prefix + ".key")) << again.err;
  EXPECT_EQ(test::read_all(prefix + ".key"), key_before) << "keys gen overwrote a private key";
  EXPECT_EQ(test::read_all(prefix + ".pub"), pub_before);
  EXPECT_EQ(test::file_mode(prefix + ".key"), 0600u);
}

}  // namespace
}  // namespace bulwark::registry

namespace bulwark::registry {
namespace {

TEST_P(RegistryCli, TrainAndAttackRecordRunsWithParamsEpochMetricsAndArtifact) {
  test::TempDir tmp;
  const std::string reg = "'" + test::new_location(backend(), tmp).location + "'";
  ASSERT_EQ(test::run_bulwark("registry init --registry " + reg, tmp).exit_code, 0);
  const std::string model = tmp.file("m.pt");
  const auto train = test::run_bulwark("train --model mlp --epochs 2 --limit 600 --test-limit 100 --quiet --out " + model +
                                           " --registry " + reg, tmp);
  ASSERT_EQ(train.exit_code, 0) << train.err;
  // A failing command is recorded as FAILED, not lost.
  const auto bad = test::run_bulwark("attack --model " + tmp.file("missing.pt") + " --n 10 --quiet --registry " + reg, tmp);
  EXPECT_NE(bad.exit_code, 0);
  const auto list = test::run_bulwark("--json runs list --registry " + reg, tmp);
  ASSERT_EQ(list.exit_code, 0) << list.err;
  const auto runs = nlohmann::json::parse(list.out);
  ASSERT_EQ(runs.size(), 2u) << list.out;
  EXPECT_EQ(runs[0]["kind"], "attack");
  EXPECT_EQ(runs[0]["info"]["status"], "FAILED");
  EXPECT_EQ(runs[1]["kind"], "train");
  EXPECT_EQ(runs[1]["info"]["status"], "FINISHED");
  const auto show = test::run_bulwark("--json runs show " + runs[1]["info"]["run_id"].get<std::string>().substr(0, 8) +
                                          " --registry " + reg, tmp);
  ASSERT_EQ(show.exit_code, 0) << show.err;
  const auto run = nlohmann::json::parse(show.out);
  EXPECT_EQ(run["data"]["params"]["epochs"], "2");
  EXPECT_EQ(run["data"]["params"]["limit"], "600");
  EXPECT_EQ(run["info"]["artifact_uri"], model);
  EXPECT_EQ(run["info"]["artifact_sha256"], test::sha256_of_file(model));
  std::set<int64_t> loss_steps;
  double test_accuracy = -1;
  for (const auto& m : run["data"]["metrics"]) {
    if (m["key"] == "train.epochs.train_loss") loss_steps.insert(m["step"].get<int64_t>());
    if (m["key"] == "test_accuracy") test_accuracy = m["value"];
  }
  EXPECT_EQ(loss_steps, (std::set<int64_t>{1, 2})) << "one train_loss per epoch, stepped by epoch";
  EXPECT_GE(test_accuracy, 0.0);
  EXPECT_LE(test_accuracy, 1.0);
}

}  // namespace
}  // namespace bulwark::registry
