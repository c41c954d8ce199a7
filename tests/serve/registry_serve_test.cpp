// `bulwark serve` with models by registry stage: verified before loading, hot-swapped when another
// process promotes or rolls back, every load and swap audited; tampered, unsigned or untrusted
// versions refused with the failed check named.
#include <atomic>
#include <functional>
#include <filesystem>
#include <fstream>
#include <regex>

#include "core/files.h"
#include "model/model.h"
#include "registry/registry.h"
#include "serve/core.h"
#include "server_fixture.h"
#include "server_process.h"
#include "signed_registry.h"

namespace bulwark::testing {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;

TEST(ServeRegistry, FollowsTheProductionStageHotSwapsWithoutFailuresAndAuditsIt) {
  SignedRegistry r;
  ASSERT_EQ(r.stage("registry promote m@1").exit_code, 0);
  ServerProcess p(with(r.trust_flags(), {"--json", "serve", "--registry", r.reg, "--model", "fashion=registry:m@production",
                                         "--http-port", "0", "--grpc-port", "-1", "--access-log", "off"}));
  const auto line = p.first_line();
  ASSERT_FALSE(line.empty()) << "server printed nothing";
  const int port = json::parse(line)["http_port"];
  httplib::Client c("127.0.0.1", port);
  c.set_read_timeout(30, 0);
  EXPECT_EQ(registry_version_served(c), 1);
  const auto metrics = c.Get("/metrics")->body;
  EXPECT_NE(metrics.find("bulwark_model_signed{model=\"fashion\"} 1"), std::string::npos) << metrics;
  EXPECT_NE(metrics.find("bulwark_allow_unsigned 0"), std::string::npos);

  // Clients keep sending while another process promotes version 2, then rolls back.
  std::atomic<bool> stop{false};
  std::atomic<int> ok{0}, failed{0};
  std::thread client([&] {
    httplib::Client t("127.0.0.1", port);
    t.set_read_timeout(30, 0);
    while (!stop) {
      const auto res = t.Post("/v2/models/fashion/infer", infer_body().dump(), "application/json");
      (res && res->status == 200 ? ok : failed)++;
    }
    t.stop();
  });
  ASSERT_EQ(r.stage("registry promote m@2").exit_code, 0);
  const auto promoted = std::chrono::steady_clock::now();
  ASSERT_TRUE(eventually([&] { return registry_version_served(c) == 2; })) << "never swapped to version 2";
  const double swap_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - promoted).count();
  EXPECT_LT(swap_s, 2.0) << "the swap took " << swap_s << " s";
  ASSERT_EQ(r.stage("registry rollback m").exit_code, 0);
  ASSERT_TRUE(eventually([&] { return registry_version_served(c) == 1; })) << "never rolled back to version 1";
  const int before = ok.load();
  ASSERT_TRUE(eventually([&] { return ok.load() > before + 10; }));
  stop = true;
  client.join();
  EXPECT_EQ(failed.load(), 0);

  // Every step is in the audit log, and the log verifies.
  const auto shown = r.cli("--json audit show");
  ASSERT_EQ(shown.exit_code, 0) << shown.output;
  std::vector<std::string> actions;
  for (const auto& e : json::parse(shown.output.substr(shown.output.find('[')))) {
    actions.push_back(e["action"].get<std::string>() + " " + e["subject"].get<std::string>());
  }
  const auto has = [&actions](const std::string& a) { return std::count(actions.begin(), actions.end(), a); };
  EXPECT_EQ(has("registry.register m@1"), 1);
  EXPECT_EQ(has("registry.promote m@1"), 1);
  EXPECT_EQ(has("serve.load fashion"), 1);
  EXPECT_EQ(has("registry.promote m@2"), 1);
  EXPECT_EQ(has("registry.rollback m@1"), 1);
  EXPECT_EQ(has("serve.swap fashion"), 2);
  EXPECT_EQ(r.cli("audit verify").exit_code, 0);
}

// One number per model version: a registry model is "2" on the wire when the registry calls it
// version 2 (the loop's "promoted v2"), in answers, V2 metadata, version routes, metric labels and
// the access log; a rollback to version 1 serves "1" again. A plain file beside it keeps the
// server's own count.
TEST(ServeRegistry, TheRegistryVersionIsTheServedVersionEverywhere) {
  SignedRegistry r;
  ASSERT_EQ(r.stage("registry promote m@1").exit_code, 0);
  ASSERT_EQ(r.stage("registry promote m@2").exit_code, 0);  // before the server starts: it never served 1
  const auto log = r.dir.file("access.jsonl");
  ServerProcess p(with(r.trust_flags(), {"--json", "serve", "--registry", r.reg, "--model", "fashion=registry:m@production",
                                         "--model", "plain=" + r.dir.file("a.pt"), "--allow-unsigned", "--http-port",
                                         "0", "--grpc-port", "-1", "--access-log", log}));
  const auto line = p.first_line();
  ASSERT_FALSE(line.empty()) << "server printed nothing";
  httplib::Client c("127.0.0.1", json::parse(line)["http_port"].get<int>());
  c.set_read_timeout(30, 0);
  const auto served = [&](const std::string& model) {
    const auto res = c.Post("/v2/models/" + model + "/infer", infer_body().dump(), "application/json");
    return res && res->status == 200 ? json::parse(res->body)["model_version"].get<std::string>() : "failed";
  };
  EXPECT_EQ(json::parse(c.Get("/v2/models/fashion")->body)["versions"], json::array({"2"}));
  EXPECT_EQ(served("fashion"), "2");
  EXPECT_EQ(c.Post("/v2/models/fashion/versions/2/infer", infer_body().dump(), "application/json")->status, 200);
  EXPECT_EQ(c.Post("/v2/models/fashion/versions/1/infer", infer_body().dump(), "application/json")->status, 404);
  EXPECT_EQ(json::parse(c.Get("/v2/models/plain")->body)["versions"], json::array({"1"}));
  EXPECT_EQ(served("plain"), "1");
  auto metrics = c.Get("/metrics")->body;
  EXPECT_NE(metrics.find("bulwark_inference_request_success_total{model=\"fashion\",version=\"2\"} 2\n"),
            std::string::npos) << metrics;
  EXPECT_EQ(metrics.find("model=\"fashion\",version=\"1\""), std::string::npos) << metrics;

  ASSERT_EQ(r.stage("registry rollback m").exit_code, 0);
  ASSERT_TRUE(eventually([&] { return registry_version_served(c) == 1; })) << "never rolled back to version 1";
  EXPECT_EQ(served("fashion"), "1") << "a counter would say 2";
  EXPECT_EQ(json::parse(c.Get("/v2/models/fashion")->body)["versions"], json::array({"1"}));
  metrics = c.Get("/metrics")->body;
  EXPECT_NE(metrics.find("bulwark_inference_request_success_total{model=\"fashion\",version=\"1\"} 1\n"),
            std::string::npos) << metrics;
  p.signal(SIGTERM);
  EXPECT_EQ(p.wait_exit(), 0);
  std::vector<std::string> logged;
  std::ifstream in(log);
  for (std::string l; std::getline(in, l);) {
    const auto rec = json::parse(l);
    if (rec.value("model", "") == "fashion" && rec.value("status", 0) == 200) logged.push_back(rec["version"]);
  }
  EXPECT_EQ(logged, (std::vector<std::string>{"2", "2", "1"}));
}

// A registry the server cannot write (a read-only volume, as KServe mounts a pvc:// storage URI; here
// a directory owned by another user, which is the same to SQLite: no -shm can be made beside it):
// served, verified, and left byte for byte as it was, with no audit entry and no WAL file added.
TEST(ServeRegistry, ServesFromARegistryItCannotWriteAndLeavesItUntouched) {
  SignedRegistry r;
  ASSERT_EQ(r.stage("registry promote m@1").exit_code, 0);
  std::vector<std::string> wrapper;
  if (::geteuid() == 0) {  // root writes anywhere: the server runs as nobody, who may only read
    wrapper = {"/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"};
  }
  for (auto p = fs::path(r.dir.path()); p != p.root_path(); p = p.parent_path()) {
    std::error_code ec;
    fs::permissions(p, fs::perms::others_read | fs::perms::others_exec, fs::perm_options::add, ec);
    if (p == fs::temp_directory_path()) break;
  }
  for (const auto& e : fs::recursive_directory_iterator(r.dir.path())) {
    if (e.path().extension() == ".key") continue;  // private keys stay 0600 (the log refuses an open one)
    fs::permissions(e.path(), fs::perms::others_read | (e.is_directory() ? fs::perms::others_exec : fs::perms::none),
                    fs::perm_options::add);
  }
  const auto revoke_write = [&](bool revoke) {  // not root: the owner itself loses write on the tree
    if (!wrapper.empty()) return;
    for (const auto& e : fs::recursive_directory_iterator(r.reg)) {
      fs::permissions(e.path(), fs::perms::owner_write, revoke ? fs::perm_options::remove : fs::perm_options::add);
    }
    fs::permissions(r.reg, fs::perms::owner_write, revoke ? fs::perm_options::remove : fs::perm_options::add);
  };
  const auto entries = [&] { return registry::Registry(r.reg, "test").audit().entries().size(); };
  const size_t before = entries();
  const std::string db_before = read_file(r.reg + "/registry.db");
  revoke_write(true);
  {
    const auto err = r.dir.file("serve.err");
    ServerProcess p(with(r.trust_flags(), {"--json", "serve", "--registry", r.reg, "--model",
                                           "fashion=registry:m@production", "--http-port", "0", "--grpc-port", "-1",
                                           "--access-log", "off"}),
                    err, wrapper);
    const auto line = p.first_line();
    ASSERT_FALSE(line.empty()) << "server printed nothing: " << read_file(err);
    httplib::Client c("127.0.0.1", json::parse(line)["http_port"].get<int>());
    c.set_read_timeout(30, 0);
    EXPECT_EQ(registry_version_served(c), 1);
    const auto res = c.Post("/v2/models/fashion/infer", infer_body().dump(), "application/json");
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, 200) << res->body;
    p.signal(SIGTERM);
    EXPECT_EQ(p.wait_exit(), 0);
    EXPECT_NE(read_file(err).find("opened read-only"), std::string::npos) << read_file(err);
  }
  revoke_write(false);
  EXPECT_EQ(read_file(r.reg + "/registry.db"), db_before) << "the server wrote to the registry";
  EXPECT_FALSE(fs::exists(r.reg + "/registry.db-wal"));
  EXPECT_FALSE(fs::exists(r.reg + "/registry.db-shm"));
  EXPECT_EQ(entries(), before) << "a read-only server's load was written to the audit log";
  // The same server with write access records its load, as before.
  {
    ServerProcess p(with(r.trust_flags(), {"--json", "serve", "--registry", r.reg, "--model",
                                           "fashion=registry:m@production", "--http-port", "0", "--grpc-port", "-1",
                                           "--access-log", "off"}));
    ASSERT_FALSE(p.first_line().empty());
    p.signal(SIGTERM);
    EXPECT_EQ(p.wait_exit(), 0);
  }
  EXPECT_GT(entries(), before);
}

TEST(ServeRegistry, RefusesTamperedUnsignedAndUntrustedVersionsNamingTheCheck) {
  const auto serve = [](const SignedRegistry& r, const std::string& ref, const std::string& extra = "") {
    return run_command(bin() + " serve --registry " + r.reg + " --model fashion=" + ref + " --http-port 0 " +
                       "--grpc-port -1 --access-log off " + (extra.empty() ? r.trust_args() : extra));
  };
  {  // one byte of the artifact
    SignedRegistry r;
    const auto obj = r.object_of(1);
    fs::permissions(obj, fs::perms::owner_write, fs::perm_options::add);
    std::fstream f(obj, std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(100);
    const char c = static_cast<char>(f.get());
    f.seekp(100);
    f.put(static_cast<char>(c ^ 1));
    f.close();
    const auto out = serve(r, "registry:m@1");
    EXPECT_EQ(out.exit_code, 1) << out.output;
    EXPECT_NE(out.output.find("failed verification (digest)"), std::string::npos) << out.output;
    EXPECT_NE(r.cli("--json audit show").output.find("registry.verify-failed"), std::string::npos);
  }
  for (const std::string field : {"payload", "sig"}) {  // one byte of the statement, of the signature
    SignedRegistry r;
    r.edit_bundle(field, [](std::string& b) { b[b.size() / 2] ^= 1; });
    const auto out = serve(r, "registry:m@1");
    EXPECT_EQ(out.exit_code, 1) << field << ": " << out.output;
    EXPECT_NE(out.output.find("failed verification (signature)"), std::string::npos) << field << ": " << out.output;
  }
  {  // unsigned: a registry version, and a plain file
    SignedRegistry r;
    TempDir d;
    ASSERT_EQ(r.cli("registry register m " + write_model(d, "c.pt", "mlp", 3) + " --allow-unsigned").exit_code, 0);
    auto out = serve(r, "registry:m@3");
    EXPECT_EQ(out.exit_code, 1) << out.output;
    EXPECT_NE(out.output.find("(unsigned)"), std::string::npos) << out.output;
    out = serve(r, d.file("c.pt"));
    EXPECT_EQ(out.exit_code, 1) << out.output;
    EXPECT_NE(out.output.find("--allow-unsigned"), std::string::npos) << out.output;
  }
  {  // the server trusts another key (its --trust-keys), whatever the registry's trust/ holds
    SignedRegistry r;
    SignedRegistry::must(bin() + " keys gen --out " + r.dir.file("other"));
    const auto out = serve(r, "registry:m@1", " --trust-keys " + r.dir.file("other.pub") + " --log-key " + r.log_pub);
    EXPECT_EQ(out.exit_code, 1) << out.output;
    EXPECT_NE(out.output.find("(untrusted-key)"), std::string::npos) << out.output;
  }
  {  // no trust roots at all: refused, saying where they come from
    SignedRegistry r;
    const auto out = serve(r, "registry:m@1", " --log-key " + r.log_pub);
    EXPECT_EQ(out.exit_code, 2) << out.output;  // bad usage
    EXPECT_NE(out.output.find("--trust-keys"), std::string::npos) << out.output;
    EXPECT_NE(out.output.find("outside the registry"), std::string::npos) << out.output;
  }
}

// The served logits for one fixed input, in process (no tokens: authentication off).
std::vector<float> served_logits(serve::InferenceCore& core) {
  serve::InferRequest req;
  req.model = "fashion";
  serve::InferInput in;
  in.name = core.model_metadata("fashion", "").inputs.at(0).name;
  in.datatype = "FP32";
  in.shape = {1, 1, 28, 28};
  for (int i = 0; i < 784; ++i) in.values.push_back(static_cast<float>((i * 37) % 255) / 255.0f);
  req.inputs.push_back(in);
  req.outputs.push_back({"logits", false});
  return core.infer(req, "", "test").outputs.at(0).fp32;
}

std::vector<float> logits_of_file(const std::string& path) {
  auto m = model::Model::load(path);
  m.set_training(false);
  std::vector<float> v;
  for (int i = 0; i < 784; ++i) v.push_back(static_cast<float>((i * 37) % 255) / 255.0f);
  const auto z = m.logits(torch::tensor(v).view({1, 1, 28, 28})).contiguous();
  return std::vector<float>(z.data_ptr<float>(), z.data_ptr<float>() + z.numel());
}

// Verify-then-load: an attacker with write access to the object store swaps version 1's object for
// other bytes right after the check (inotify would give them that moment; the test hook gives it
// exactly). Before, the server then loaded the swapped file and served it as "signed v1"; now it
// serves the bytes it verified, read once.
TEST(ServeRegistry, AnObjectSwappedBetweenTheCheckAndTheLoadIsNeverServed) {
  SignedRegistry r;
  const auto obj1 = r.object_of(1);
  const std::string other = read_file(r.object_of(2));  // a valid model, but not version 1
  serve::CoreOptions o;
  r.trust(o);
  int swaps = 0;
  o.source.after_verify_for_tests = [&](const serve::ResolvedModel& m) {
    if (m.registry_version != 1) return;
    fs::permissions(obj1, fs::perms::owner_write, fs::perm_options::add);
    std::ofstream(obj1, std::ios::binary | std::ios::trunc) << other;
    ++swaps;
  };
  serve::InferenceCore core(o);
  core.load_model("fashion", "registry:m@1");
  ASSERT_EQ(swaps, 1);
  ASSERT_EQ(read_file(obj1), other) << "the swap happened on disk";
  const auto served = served_logits(core);
  EXPECT_EQ(served, logits_of_file(r.dir.file("a.pt"))) << "version 1's verified bytes are served";
  EXPECT_NE(served, logits_of_file(r.dir.file("b.pt")));
  // The next verification sees the swap and refuses it, naming the digest.
  o.source.after_verify_for_tests = nullptr;
  serve::InferenceCore again(o);
  try {
    again.load_model("fashion", "registry:m@1");
    ADD_FAILURE() << "the swapped object was accepted";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("(digest)"), std::string::npos) << e.what();
  }
}

// A spec file planted beside a signed object ("<object>.json") is not covered by the signature:
// it is never read for a registry version (before, it gave a spec-less archive its labels and
// value range). The archive must carry its spec, and one without is refused, naming bulwark import.
TEST(ServeRegistry, APlantedSpecBesideASignedObjectIsNeverRead) {
  SignedRegistry r;
  auto m = model::Model::load(r.dir.file("a.pt"));
  const std::string bare = r.dir.file("bare.pt");
  m.module().save(bare);  // TorchScript without Bulwark's spec inside
  SignedRegistry::must(bin() + " registry register bare " + bare + " --key " + r.dir.file("k.key") + " --registry " + r.reg);
  std::string object;
  {
    registry::Registry reg(r.reg, "test");
    const auto sha = reg.resolve(registry::parse_reference("bare@1")).files.at("model.pt");
    object = r.reg + "/objects/sha256/" + sha.substr(0, 2) + "/" + sha;
  }
  auto planted = m.spec().to_json();
  planted["class_names"] = json::array({"a", "b", "c", "d", "e", "f", "g", "h", "i", "PLANTED"});
  planted["value_range"] = json::array({0.0, 255.0});  // would accept 200.0 as a pixel
  std::ofstream(object + ".json") << planted.dump();
  serve::CoreOptions o;
  r.trust(o);
  serve::InferenceCore core(o);
  try {
    core.load_model("fashion", "registry:bare@1");
    ADD_FAILURE() << "a signed archive without its spec was served with the planted one";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("no Bulwark spec inside"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("bulwark import"), std::string::npos) << e.what();
  }
}

TEST(ServeRegistry, ABurstOfFailedAuthenticationsIsAudited) {
  SignedRegistry r;
  ASSERT_EQ(r.stage("registry promote m@1").exit_code, 0);
  const auto minted = run_command(bin() + " --json token --id ops --roles infer");
  ASSERT_EQ(minted.exit_code, 0);
  const auto tok = json::parse(minted.output.substr(minted.output.find('{')));
  const auto tokens = r.dir.file("tokens.yaml");
  std::ofstream(tokens) << "tokens:\n  - id: ops\n    sha256: " << tok["sha256"].get<std::string>()
                        << "\n    roles: [infer]\n";
  ServerProcess p(with(r.trust_flags(), {"--json", "serve", "--registry", r.reg, "--model", "fashion=registry:m@production",
                                         "--tokens", tokens, "--http-port", "0", "--grpc-port", "-1", "--access-log", "off"}));
  const auto line = p.first_line();
  ASSERT_FALSE(line.empty());
  httplib::Client c("127.0.0.1", json::parse(line)["http_port"].get<int>());
  const auto audited = [&r] { return r.cli("--json audit show").output.find("serve.auth-failures") != std::string::npos; };
  httplib::Headers good{{"Authorization", "Bearer " + tok["token"].get<std::string>()}};
  EXPECT_EQ(c.Post("/v2/models/fashion/infer", good, infer_body().dump(), "application/json")->status, 200);
  for (int i = 0; i < 19; ++i) {
    httplib::Headers bad{{"Authorization", "Bearer wrong" + std::to_string(i)}};
    EXPECT_EQ(c.Post("/v2/models/fashion/infer", bad, infer_body().dump(), "application/json")->status, 401);
  }
  EXPECT_FALSE(audited()) << "19 failures are not a burst";
  EXPECT_EQ(c.Post("/v2/models/fashion/infer", infer_body().dump(), "application/json")->status, 401);
  EXPECT_TRUE(audited());
}

}  // namespace
}  // namespace bulwark::testing
