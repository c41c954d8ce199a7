// The audit log: RFC 6962 Merkle roots against the certificate-transparency test vectors, and
// each kind of tampering (edit, delete, reorder, truncate, rewrite, forged checkpoint) caught by
// the layer meant to catch it, on SQLite and on PostgreSQL.
#include "registry/audit.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <memory>

#include "backends.h"
#include "registry/store.h"
#include "registry_test_util.h"

namespace bulwark::registry {
namespace {

namespace fs = std::filesystem;
using test::contains;

// One registry per backend with 8 audit entries, built the first time a test needs it; each
// tampering case works on its own copy (directory and database).
class Audit : public test::BackendTest {
 protected:
  struct Base {
    test::TempDir tmp;
    test::Location where;
  };

  static void TearDownTestSuite() { bases_.clear(); }

  const Base& base() {
    auto& slot = bases_[backend()];
    if (!slot) slot = build(backend());
    return *slot;
  }
  std::string file(const std::string& name) { return base().tmp.file(name); }
  const test::Location& base_location() { return base().where; }

  static std::unique_ptr<Base> build(Backend backend) {
    auto b = std::make_unique<Base>();
    b->where = test::new_location(backend, b->tmp);
    Registry::init(b->where.location);  // 1 registry.init
    generate_key_pair(b->tmp.file("k.key"), b->tmp.file("k.pub"));
    Registry reg(b->where.location, "tester");
    reg.trust_key(b->tmp.file("k.pub"));  // 2 keys.trust
    const SigningKey key = SigningKey::load(b->tmp.file("k.key"));
    for (int i = 0; i < 2; ++i) add(reg, *b, key, i);  // 3, 4 registry.register
    reg.promote("m", 1, Stage::kProduction);           // 5 registry.promote
    reg.promote("m", 2, Stage::kProduction);           // 6 registry.promote
    test::write_all(b->tmp.file("cp6"), test::read_all(b->where.dir + "/audit.checkpoint"));
    reg.rollback("m");    // 7 registry.rollback
    add(reg, *b, key, 2);  // 8 registry.register
    test::write_all(b->tmp.file("cp8"), test::read_all(b->where.dir + "/audit.checkpoint"));
    return b;  // `reg` closes here: a PostgreSQL database with a session open cannot be copied
  }
  static void add(Registry& reg, const Base& b, const SigningKey& key, int i) {
    RegisterRequest r;
    r.model = "m";
    r.files["model.pt"] = b.tmp.file("model" + std::to_string(i));
    test::write_random_file(r.files["model.pt"], 2048, 100 + i);
    reg.register_version(r, &key);
  }

  // A copy of the registry to tamper with.
  test::Location fresh_copy() { return test::copy_location(backend(), base_location(), scratch_, "reg"); }
  static std::unique_ptr<Database> open_db(const test::Location& where) {
    return open_database(parse_location(where.location), false);
  }
  static AuditVerdict verify(const test::Location& where, const std::string& external = "") {
    Registry reg(where.location, "auditor");
    return reg.audit().verify(external);
  }
  static std::vector<AuditEntry> all_entries(const test::Location& where) {
    Registry reg(where.location, "auditor");
    return reg.audit().entries();
  }

  static std::map<Backend, std::unique_ptr<Base>> bases_;
  test::TempDir scratch_;
};
std::map<Backend, std::unique_ptr<Audit::Base>> Audit::bases_;
BULWARK_FOR_EACH_BACKEND(Audit);

TEST(AuditLog, MerkleRootMatchesTheCertificateTransparencyVectors) {
  // RFC 6962 reference test data (certificate-transparency-go, merkle tree tests); the roots were
  // also recomputed with a few lines of Python hashlib before being written down here.
  const std::vector<std::string> leaves_hex = {
      "", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f"};
  const std::vector<std::string> roots = {
      "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
      "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
      "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
      "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
      "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
      "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
      "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
      "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
  };
  EXPECT_EQ(test::to_hex(merkle_root({})), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  std::vector<std::string> leaves;
  for (size_t n = 1; n <= leaves_hex.size(); ++n) {
    leaves.push_back(test::from_hex(leaves_hex[n - 1]));
    const std::string root = merkle_root(leaves);
    EXPECT_EQ(root.size(), 32u);
    EXPECT_EQ(test::to_hex(root), roots[n - 1]) << n << " leaves";
  }
}

// Writes `e`'s columns into row `seq`.
void write_row(Database& db, int64_t seq, const AuditEntry& e) {
  ASSERT_EQ(db.execute("UPDATE audit SET time = ?, actor = ?, action = ?, subject = ?, details = ?, prev_hash = ?, "
                       "entry_hash = ? WHERE seq = ?",
                       {e.time, e.actor, e.action, e.subject, e.details, e.prev_hash, e.entry_hash, seq}),
            1);
}

// Recomputes every hash and link after an edit, as someone hiding it would, and writes the rows back.
void rechain(Database& db, std::vector<AuditEntry>& entries) {
  for (size_t i = 1; i < entries.size(); ++i) {
    entries[i].prev_hash = entries[i - 1].entry_hash;
    entries[i].entry_hash = test::sha256_hex_of(entries[i].canonical());
    write_row(db, entries[i].seq, entries[i]);
  }
}

TEST_P(Audit, IntactLogVerifies) {
  const auto entries = all_entries(base_location());
  ASSERT_EQ(entries.size(), 8u);
  const std::vector<std::string> actions = {"registry.init",     "keys.trust",       "registry.register",
                                            "registry.register", "registry.promote", "registry.promote",
                                            "registry.rollback", "registry.register"};
  for (size_t i = 0; i < entries.size(); ++i) {
    EXPECT_EQ(entries[i].seq, static_cast<int64_t>(i) + 1);
    EXPECT_EQ(entries[i].action, actions[i]) << "entry " << i + 1;
    // The chain, recomputed here from the stored fields with OpenSSL's SHA-256.
    EXPECT_EQ(entries[i].entry_hash, test::sha256_hex_of(entries[i].canonical()));
    EXPECT_EQ(entries[i].prev_hash, i == 0 ? std::string(64, '0') : entries[i - 1].entry_hash);
  }
  const auto v = verify(base_location(), test::read_all(file("cp8")));
  EXPECT_TRUE(v.ok) << v.problem;
  EXPECT_EQ(v.entries, 8);
  EXPECT_EQ(v.first_bad, 0);
  EXPECT_TRUE(v.problem.empty());
  // An older checkpoint kept elsewhere is a prefix of the log: still consistent.
  EXPECT_TRUE(verify(base_location(), test::read_all(file("cp6"))).ok);
}

TEST_P(Audit, EditedEntryIsNamed) {
  const auto copy = fresh_copy();
  open_db(copy)->exec("UPDATE audit SET actor = 'mallory' WHERE seq = 4");
  const auto v = verify(copy);
  EXPECT_FALSE(v.ok);
  EXPECT_EQ(v.first_bad, 4);
  EXPECT_TRUE(contains(v.problem, "entry 4")) << v.problem;
}

TEST_P(Audit, DeletedEntryIsNamed) {
  const auto copy = fresh_copy();
  open_db(copy)->exec("DELETE FROM audit WHERE seq = 3");
  const auto v = verify(copy);
  EXPECT_FALSE(v.ok);
  EXPECT_EQ(v.first_bad, 3);
  EXPECT_TRUE(contains(v.problem, "entry 3")) << v.problem;
}

TEST_P(Audit, ReorderedEntriesAreNamed) {
  const auto copy = fresh_copy();
  const auto entries = all_entries(copy);
  {
    auto db = open_db(copy);
    write_row(*db, 3, entries[3]);
    write_row(*db, 4, entries[2]);
  }
  const auto v = verify(copy);
  EXPECT_FALSE(v.ok);
  EXPECT_EQ(v.first_bad, 3);
  EXPECT_TRUE(contains(v.problem, "entry 3")) << v.problem;
}

TEST_P(Audit, TruncatedLogIsShorterThanTheCheckpoint) {
  const auto copy = fresh_copy();
  open_db(copy)->exec("DELETE FROM audit WHERE seq > 6");
  const auto v = verify(copy);
  EXPECT_FALSE(v.ok);
  EXPECT_EQ(v.entries, 6);
  EXPECT_EQ(v.first_bad, 7);
  EXPECT_TRUE(contains(v.problem, "truncated")) << v.problem;
}

TEST_P(Audit, ConsistentlyRewrittenHistoryFailsOnTheCheckpoint) {
  const auto copy = fresh_copy();
  auto entries = all_entries(copy);
  entries[1].actor = "mallory";
  {
    auto db = open_db(copy);
    rechain(*db, entries);
  }
  const auto v = verify(copy);
  EXPECT_FALSE(v.ok);
  ASSERT_FALSE(v.checked.empty());
  EXPECT_EQ(v.checked[0], "hash chain (8 entries)") << "the rewrite should pass the chain and fail only on the root";
  EXPECT_TRUE(contains(v.problem, "checkpoint")) << v.problem;
  EXPECT_TRUE(contains(v.problem, "rewritten")) << v.problem;
}

TEST_P(Audit, TruncationWithAnOldCheckpointIsCaughtByACopyKeptElsewhere) {
  const auto copy = fresh_copy();
  open_db(copy)->exec("DELETE FROM audit WHERE seq > 6");
  test::write_all(copy.dir + "/audit.checkpoint", test::read_all(file("cp6")));
  const auto own = verify(copy);
  EXPECT_TRUE(own.ok) << "the registry's own checkpoint matches the truncated log: " << own.problem;
  EXPECT_EQ(own.entries, 6);
  const auto v = verify(copy, test::read_all(file("cp8")));
  EXPECT_FALSE(v.ok);
  EXPECT_TRUE(contains(v.problem, "truncated")) << v.problem;
  EXPECT_TRUE(contains(v.problem, "given checkpoint")) << v.problem;
}

// The checkpoint with one character of its signature's base64 changed (hint left alone).
std::string forge_signature(std::string note) {
  const size_t line = note.rfind("\n\xe2\x80\x94 ");
  EXPECT_NE(line, std::string::npos) << note;
  const size_t b64 = note.find(' ', note.find(' ', line + 1) + 1) + 1;
  const size_t end = note.find('\n', b64);
  const size_t i = b64 + (end - b64) / 2;  // well past the 4-byte key hint
  note[i] = note[i] == 'A' ? 'B' : 'A';
  return note;
}

TEST_P(Audit, CheckpointWithAChangedSignatureFails) {
  const auto copy = fresh_copy();
  const std::string forged = forge_signature(test::read_all(copy.dir + "/audit.checkpoint"));
  ASSERT_NE(forged, test::read_all(copy.dir + "/audit.checkpoint"));
  const auto external = verify(copy, forged);
  EXPECT_FALSE(external.ok);
  EXPECT_TRUE(contains(external.problem, "does not verify")) << external.problem;
  test::write_all(copy.dir + "/audit.checkpoint", forged);
  const auto own = verify(copy);
  EXPECT_FALSE(own.ok);
  EXPECT_TRUE(contains(own.problem, "checkpoint")) << own.problem;
  EXPECT_TRUE(contains(own.problem, "does not verify")) << own.problem;
}

TEST_P(Audit, EntriesFilterBySequenceAndTime) {
  const auto all = all_entries(base_location());
  ASSERT_EQ(all.size(), 8u);
  Registry reg(base_location().location, "auditor");
  const auto after5 = reg.audit().entries(5);
  ASSERT_EQ(after5.size(), 3u);
  EXPECT_EQ(after5.front().seq, 6);
  EXPECT_EQ(after5.back().seq, 8);
  EXPECT_TRUE(reg.audit().entries(8).empty());

  const std::string since = all[3].time;
  std::vector<int64_t> expected, got;
  for (const auto& e : all) {
    if (e.time >= since) expected.push_back(e.seq);
  }
  for (const auto& e : reg.audit().entries(0, since)) got.push_back(e.seq);
  EXPECT_EQ(got, expected);
  EXPECT_NE(std::find(got.begin(), got.end(), 4), got.end());
  EXPECT_EQ(reg.audit().entries(0, since.substr(0, 4)).size(), 8u) << "a year prefix";
  EXPECT_TRUE(reg.audit().entries(0, "9999").empty());
  const auto both = reg.audit().entries(6, all[0].time);
  ASSERT_EQ(both.size(), 2u);
  EXPECT_EQ(both[0].seq, 7);
}

// An entry appended after the checkpoint by someone who can write the database but has no log key:
// hashed and chained correctly, but without the entry signature every real append carries.
AuditEntry forge_next_entry(const std::vector<AuditEntry>& entries) {
  AuditEntry e = entries.back();
  e.seq += 1;
  e.actor = "alice";
  e.action = "registry.promote";
  e.subject = "m@1";
  e.details = R"({"from":"archived","to":"production"})";
  e.prev_hash = entries.back().entry_hash;
  e.entry_hash = test::sha256_hex_of(e.canonical());
  return e;
}

TEST_P(Audit, AForgedEntryAfterTheCheckpointIsNamedAndNothingChainsOntoIt) {
  const auto copy = fresh_copy();
  const auto e = forge_next_entry(all_entries(copy));
  open_db(copy)->execute("INSERT INTO audit(seq, time, actor, action, subject, details, prev_hash, entry_hash) "
                         "VALUES(?, ?, ?, ?, ?, ?, ?, ?)",
                         {e.seq, e.time, e.actor, e.action, e.subject, e.details, e.prev_hash, e.entry_hash});
  const auto v = verify(copy);
  EXPECT_FALSE(v.ok);
  EXPECT_EQ(v.first_bad, 9);
  EXPECT_TRUE(contains(v.problem, "entry 9")) << v.problem;
  EXPECT_TRUE(contains(v.problem, "not signed by the log key")) << v.problem;
  // A signature copied from another entry does not fit this one.
  open_db(copy)->exec("INSERT INTO audit_signatures(seq, signature) SELECT 9, signature FROM audit_signatures WHERE seq = 8");
  EXPECT_FALSE(verify(copy).ok);

  // The next legitimate append refuses to chain onto it, so it is never signed into a checkpoint.
  const std::string checkpoint = test::read_all(copy.dir + "/audit.checkpoint");
  Registry reg(copy.location, "tester");
  try {
    reg.record("serve.load", "m@2", nlohmann::json::object());
    ADD_FAILURE() << "appended onto a forged entry";
  } catch (const Error& err) {
    EXPECT_TRUE(contains(err.what(), "entry 9")) << err.what();
    EXPECT_TRUE(contains(err.what(), "not signed by the log key")) << err.what();
  }
  EXPECT_EQ(test::read_all(copy.dir + "/audit.checkpoint"), checkpoint);
  EXPECT_EQ(all_entries(copy).size(), 9u);
}

// The last entry the checkpoint covers, rewritten with a hash to match: the next legitimate append
// would chain onto it and sign it into the next checkpoint, making the damage permanent. The
// stored frontier is trusted only with its rightmost subtree recomputed from the rows, so the
// append is refused and the checkpoint stays as it was.
TEST_P(Audit, ALastCoveredEntryRewrittenIsNotChainedOnto) {
  const auto copy = fresh_copy();
  {
    Registry reg(copy.location, "tester");
    reg.record("serve.load", "m@2", nlohmann::json::object());  // stores a frontier for 9 entries
  }
  auto entries = all_entries(copy);
  ASSERT_EQ(entries.size(), 9u);
  entries[8].actor = "mallory";
  entries[8].entry_hash = test::sha256_hex_of(entries[8].canonical());
  write_row(*open_db(copy), 9, entries[8]);
  const std::string checkpoint = test::read_all(copy.dir + "/audit.checkpoint");
  Registry reg(copy.location, "tester");
  try {
    reg.record("serve.load", "m@2", nlohmann::json::object());
    ADD_FAILURE() << "appended onto a rewritten entry";
  } catch (const Error& err) {
    EXPECT_TRUE(contains(err.what(), "history rewritten")) << err.what();
  }
  EXPECT_EQ(test::read_all(copy.dir + "/audit.checkpoint"), checkpoint);
  EXPECT_EQ(all_entries(copy).size(), 9u);
}

TEST_P(Audit, EntriesAfterTheCheckpointSignedByTheLogKeyVerify) {
  const auto copy = fresh_copy();
  const std::string checkpoint = test::read_all(copy.dir + "/audit.checkpoint");
  {
    Registry reg(copy.location, "tester");
    reg.record("serve.load", "m@2", nlohmann::json::object());
    reg.record("serve.load", "m@2", nlohmann::json::object());
  }
  // As after a crash between two commits and their checkpoints: the checkpoint lags by two.
  test::write_all(copy.dir + "/audit.checkpoint", checkpoint);
  const auto v = verify(copy);
  EXPECT_TRUE(v.ok) << v.problem;
  EXPECT_EQ(v.uncovered, 2);
  Registry reg(copy.location, "tester");
  reg.record("serve.load", "m@2", nlohmann::json::object());  // chains on, and the checkpoint catches up
  const auto after = verify(copy);
  EXPECT_TRUE(after.ok) << after.problem;
  EXPECT_EQ(after.entries, 11);
  EXPECT_EQ(after.uncovered, 0);
}

TEST_P(Audit, AnOlderCheckpointRestoredOverATruncatedLogIsARollbackToTheWitness) {
  const auto copy = fresh_copy();
  const test::TempDir witness;
  {
    Registry reg(copy.location, "tester");
    EXPECT_EQ(reg.audit().publish_checkpoint(witness.path()), witness.file("checkpoint.8"));
    EXPECT_EQ(reg.audit().publish_checkpoint(witness.path()), witness.file("checkpoint.8")) << "idempotent";
  }
  test::write_all(witness.file("checkpoint.6"), test::read_all(file("cp6")));
  AuditVerifyOptions o;
  o.witness_dir = witness.path();
  {
    Registry reg(copy.location, "auditor");
    const auto v = reg.audit().verify(o);
    EXPECT_TRUE(v.ok) << v.problem;
    EXPECT_TRUE(contains(v.checked.back(), "2 witnessed")) << v.checked.back();
  }
  open_db(copy)->exec("DELETE FROM audit WHERE seq > 6");
  test::write_all(copy.dir + "/audit.checkpoint", test::read_all(file("cp6")));
  Registry reg(copy.location, "auditor");
  EXPECT_TRUE(reg.audit().verify().ok) << "without the witness the rollback is self-consistent";
  const auto v = reg.audit().verify(o);
  EXPECT_FALSE(v.ok);
  EXPECT_TRUE(contains(v.problem, "rolled back")) << v.problem;
  EXPECT_TRUE(contains(v.problem, "checkpoint.8")) << v.problem;
}

TEST_P(Audit, AWitnessedCheckpointOfAnotherHistoryFailsTheConsistencyProof) {
  // The same registry's log key signs a checkpoint over a different history (someone holding the key
  // rewrote entry 2 and re-signed): the witness, published before, catches it by proof alone.
  const auto copy = fresh_copy();
  const test::TempDir witness;
  test::write_all(witness.file("checkpoint.6"), test::read_all(file("cp6")));
  auto entries = all_entries(copy);
  entries[1].actor = "mallory";
  {
    auto db = open_db(copy);
    rechain(*db, entries);
    db->exec("DELETE FROM meta WHERE key = 'audit_frontier'");
  }
  // Re-sign a checkpoint over the rewritten entries with the registry's own log key.
  std::vector<std::string> leaves;
  for (const auto& e : entries) leaves.push_back(e.canonical());
  Registry reg(copy.location, "auditor");
  const std::string origin = reg.audit().origin();
  const std::string body = origin + "\n8\n" + base64_encode(merkle_root(leaves)) + "\n";
  test::write_all(copy.dir + "/audit.checkpoint", sign_note(body, origin, SigningKey::load(copy.dir + "/log.key")));
  EXPECT_TRUE(reg.audit().verify().ok) << "re-signed with the log key: consistent in itself";
  AuditVerifyOptions o;
  o.witness_dir = witness.path();
  const auto v = reg.audit().verify(o);
  EXPECT_FALSE(v.ok);
  EXPECT_TRUE(contains(v.problem, "not consistent with checkpoint.6")) << v.problem;
}

}  // namespace
}  // namespace bulwark::registry
