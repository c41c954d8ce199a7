// Issue 32's registry attacks against a running server, each by someone who can write the registry
// directory and its database but holds no key the server trusts (the keys and the log's public key
// come from the server's flags, outside the registry). On the code before signed stage statements
// and pinned trust roots, each of these was served.
#include <filesystem>
#include <fstream>

#include "core/digest.h"
#include "core/files.h"
#include "registry/registry.h"
#include "serve/core.h"
#include "server_fixture.h"
#include "server_process.h"
#include "signed_registry.h"

namespace bulwark::testing {
namespace {

using nlohmann::json;

bool audited(const SignedRegistry& r, const std::string& action, const std::string& text) {
  const auto shown = r.cli("--json audit show");
  if (shown.exit_code != 0) return false;
  for (const auto& e : json::parse(shown.output.substr(shown.output.find('[')))) {
    if (e["action"] == action && e.dump().find(text) != std::string::npos) return true;
  }
  return false;
}

struct Served {
  ServerProcess process;
  httplib::Client client;
  explicit Served(const SignedRegistry& r)
      : process(with(r.trust_flags(), {"--json", "serve", "--registry", r.reg, "--model", "fashion=registry:m@production",
                                       "--http-port", "0", "--grpc-port", "-1", "--access-log", "off"})),
        client("127.0.0.1", port_of(process)) {}
  static int port_of(ServerProcess& p) {
    const auto line = p.first_line();
    return line.empty() ? 1 : json::parse(line)["http_port"].get<int>();
  }
};

CommandResult serve_once(const SignedRegistry& r) {
  return run_command(bin() + " serve --registry " + r.reg + " --model fashion=registry:m@production --http-port 0 " +
                     "--grpc-port -1 --access-log off" + r.trust_args());
}

// Downgrade by SQL: production moved back to version 1 in the database (the stage column), and
// then the statement that put version 2 there deleted too. The column is not what servers follow;
// the deleted statement makes the latest one older than what the server already followed, and
// the audit log still records the deleted one, so a restarted server refuses to start on it.
TEST(RegistryAttacks, AProductionStageMovedBackInTheDatabaseIsNotFollowed) {
  SignedRegistry r;
  ASSERT_EQ(r.stage("registry promote m@1").exit_code, 0);
  ASSERT_EQ(r.stage("registry promote m@2").exit_code, 0);
  Served s(r);
  ASSERT_EQ(registry_version_served(s.client), 2);
  {
    registry::Registry reg(r.reg, "mallory");
    reg.db().exec("UPDATE versions SET stage = 'archived' WHERE model = 'm' AND version = 2;"
                  "UPDATE versions SET stage = 'production' WHERE model = 'm' AND version = 1;");
  }
  // A server started now reads the signed statement, not the column: version 2.
  {
    Served fresh(r);
    EXPECT_EQ(registry_version_served(fresh.client), 2) << "the SQL stage change was followed";
  }
  {
    registry::Registry reg(r.reg, "mallory");
    reg.db().exec("DELETE FROM stage_statements WHERE model = 'm' AND counter = 2");
  }
  ASSERT_TRUE(eventually([&] { return audited(r, "serve.follow-refused", "older than #2"); }))
      << r.cli("audit show").output;
  EXPECT_EQ(registry_version_served(s.client), 2);
  EXPECT_EQ(s.client.Post("/v2/models/fashion/infer", infer_body().dump(), "application/json")->status, 200);
  const auto restarted = serve_once(r);
  EXPECT_EQ(restarted.exit_code, 1) << restarted.output;
  EXPECT_NE(restarted.output.find("statements were deleted"), std::string::npos) << restarted.output;
}

// Planted trust: the attacker's own key copied into the registry's trust/ (no keys.trust entry),
// a backdoored version registered and promoted with it. The server trusts only its --trust-keys.
TEST(RegistryAttacks, AKeyPlantedInTheRegistrysTrustListIsNotTrusted) {
  SignedRegistry r;
  ASSERT_EQ(r.stage("registry promote m@1").exit_code, 0);
  Served s(r);
  ASSERT_EQ(registry_version_served(s.client), 1);
  SignedRegistry::must(bin() + " keys gen --out " + r.dir.file("evil"));
  std::filesystem::copy_file(r.dir.file("evil.pub"),
                             r.reg + "/trust/" + registry::PublicKey::from_pem(read_file(r.dir.file("evil.pub")), "evil")
                                                     .key_id() + ".pub");
  TempDir d;
  ASSERT_EQ(r.cli("registry register m " + write_model(d, "backdoor.pt", "mlp", 9) + " --key " + r.dir.file("evil.key"))
                .exit_code,
            0);
  ASSERT_EQ(r.cli("registry promote m@3 --key " + r.dir.file("evil.key")).exit_code, 0);
  ASSERT_TRUE(eventually([&] { return audited(r, "serve.follow-refused", "untrusted-key"); }))
      << r.cli("audit show").output;
  EXPECT_EQ(registry_version_served(s.client), 1);
  const auto restarted = serve_once(r);
  EXPECT_EQ(restarted.exit_code, 1) << restarted.output;
  EXPECT_NE(restarted.output.find("not among the trusted keys"), std::string::npos) << restarted.output;
}

// A stage change only unsigned audit entries record: someone with an operator key but not the log
// key writes the statement row and its audit entry by SQL. The entry, after the checkpoint and not
// signed by the log key, fails the log; the server does not follow the statement it records.
TEST(RegistryAttacks, AStageChangeOnlyAnUnsignedAuditEntryRecordsIsNotFollowed) {
  SignedRegistry r;
  ASSERT_EQ(r.stage("registry promote m@1").exit_code, 0);
  {
    registry::Registry reg(r.reg, "mallory");
    const auto v2 = reg.resolve(registry::parse_reference("m@2"));
    registry::StageStatement st;
    st.registry = reg.audit().origin();
    st.model = "m";
    st.counter = 2;
    st.action = "promote";
    st.version = 2;
    st.stage = "production";
    st.production = registry::StageSlot{2, registry::files_sha256(v2.files)};
    st.time = registry::utc_timestamp();
    st.actor = "ops";
    const auto key = registry::SigningKey::load(r.dir.file("k.key"));
    const std::string payload = st.payload();
    reg.db().execute("INSERT INTO stage_statements(model, counter, statement, signature, key_id) VALUES(?, ?, ?, ?, ?)",
                     {std::string("m"), int64_t{2}, payload, registry::sign_stage_statement(key, payload), key.key_id()});
    auto entries = reg.audit().entries();
    registry::AuditEntry e = entries.back();
    e.seq += 1;
    e.actor = "ops";
    e.action = "registry.promote";
    e.subject = "m@2";
    e.details = json{{"from", "none"}, {"to", "production"}, {"statement", {{"counter", 2}, {"sha256", sha256_hex(payload)}}}}
                    .dump();
    e.prev_hash = entries.back().entry_hash;
    e.entry_hash = sha256_hex(e.canonical());
    reg.db().execute("INSERT INTO audit(seq, time, actor, action, subject, details, prev_hash, entry_hash) "
                     "VALUES(?, ?, ?, ?, ?, ?, ?, ?)",
                     {e.seq, e.time, e.actor, e.action, e.subject, e.details, e.prev_hash, e.entry_hash});
  }
  const auto out = serve_once(r);
  EXPECT_EQ(out.exit_code, 1) << out.output;
  EXPECT_NE(out.output.find("not signed by the log key"), std::string::npos) << out.output;
  EXPECT_NE(out.output.find("(registry.promote m@2)"), std::string::npos) << out.output;
}

// Restored old checkpoint: the audit log truncated back to before version 2's promotion, the
// checkpoint of that time put back, the newer statement deleted — a registry consistent in itself,
// in which a freshly started server would follow version 1. Its checkpoint was published to a
// witness before (audit checkpoint --publish); a server given --audit-witness refuses the rollback.
TEST(RegistryAttacks, AnOlderCheckpointRestoredWithATruncatedLogIsRefusedAgainstTheWitness) {
  SignedRegistry r;
  ASSERT_EQ(r.stage("registry promote m@1").exit_code, 0);
  const std::string old_checkpoint = read_file(r.reg + "/audit.checkpoint");
  int64_t entries_then = 0;
  {
    registry::Registry reg(r.reg, "test");
    entries_then = static_cast<int64_t>(reg.audit().entries().size());
  }
  ASSERT_EQ(r.stage("registry promote m@2").exit_code, 0);
  TempDir witness;
  ASSERT_EQ(r.cli("audit checkpoint --publish " + witness.path()).exit_code, 0);
  {
    registry::Registry reg(r.reg, "mallory");
    reg.db().execute("DELETE FROM audit WHERE seq > ?", {entries_then});
    reg.db().exec("DELETE FROM stage_statements WHERE model = 'm' AND counter = 2;"
                  "UPDATE versions SET stage = 'archived' WHERE model = 'm' AND version = 2;"
                  "UPDATE versions SET stage = 'production' WHERE model = 'm' AND version = 1;");
  }
  atomic_write_file(r.reg + "/audit.checkpoint", old_checkpoint);
  EXPECT_EQ(r.cli("audit verify").exit_code, 0) << "consistent in itself: what the witness is for";
  const auto out = run_command(bin() + " serve --registry " + r.reg + " --model fashion=registry:m@production " +
                               "--http-port 0 --grpc-port -1 --access-log off --audit-witness " + witness.path() +
                               r.trust_args());
  EXPECT_EQ(out.exit_code, 1) << out.output;
  EXPECT_NE(out.output.find("log rolled back"), std::string::npos) << out.output;
  // The refusing server audited its refusal, so the rolled-back log has grown again: past the
  // witnessed size it no longer rolls back but diverges, and the consistency proof fails.
  const auto audited = r.cli("audit verify --witness " + witness.path());
  EXPECT_EQ(audited.exit_code, 1) << audited.output;
  EXPECT_TRUE(audited.output.find("rolled back") != std::string::npos ||
              audited.output.find("is not consistent with checkpoint.") != std::string::npos)
      << audited.output;
}

// A re-keyed log (the attacker's own log.key/log.pub, the checkpoint re-signed): the server's
// --log-key is the one kept outside, so the log no longer verifies and no stage change is followed.
TEST(RegistryAttacks, AReKeyedLogIsRefusedByTheServersPinnedLogKey) {
  SignedRegistry r;
  ASSERT_EQ(r.stage("registry promote m@1").exit_code, 0);
  registry::generate_key_pair(r.dir.file("evil-log.key"), r.dir.file("evil-log.pub"));
  namespace fs = std::filesystem;
  fs::copy_file(r.dir.file("evil-log.key"), r.reg + "/log.key", fs::copy_options::overwrite_existing);
  fs::copy_file(r.dir.file("evil-log.pub"), r.reg + "/log.pub", fs::copy_options::overwrite_existing);
  const std::string note = read_file(r.reg + "/audit.checkpoint");
  const std::string body = note.substr(0, note.find("\n\n") + 1);
  const std::string origin = body.substr(0, body.find('\n'));
  atomic_write_file(r.reg + "/audit.checkpoint",
                    registry::sign_note(body, origin, registry::SigningKey::load(r.reg + "/log.key")));
  const auto out = serve_once(r);
  EXPECT_EQ(out.exit_code, 1) << out.output;
  EXPECT_NE(out.output.find("re-keyed"), std::string::npos) << out.output;
}

}  // namespace
}  // namespace bulwark::testing
