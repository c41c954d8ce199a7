// registry/audit.h — the tamper-evident audit log: append-only entries in the registry database,
// each hashed and chained to the one before it, and the whole log a Merkle tree (RFC 6962
// hashing) whose signed checkpoint (C2SP tlog-checkpoint text) is rewritten after every append.
//
// What each layer catches: an edited entry no longer matches its own hash; a deleted, inserted or
// reordered entry breaks the sequence or the chain; a truncated log (the last entries removed, the
// chain still intact) is shorter than the checkpoint; a rewritten history (every hash recomputed)
// no longer matches the checkpoint's signed root. A copy of a checkpoint kept elsewhere catches a
// rewrite of both the database and the checkpoint file by someone holding the log key.
//
// Linear under concurrency: append locks the audit table (PostgreSQL; SQLite's write lock already
// excludes every other writer) before it reads the last entry, inside the caller's transaction,
// so two writers never both chain onto the same entry; seq is the primary key besides.
//
// Thread-safety: an AuditLog uses its registry's connection; one thread at a time.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "registry/db.h"

namespace bulwark::registry {

struct AuditEntry {
  int64_t seq = 0;     // 1, 2, 3, ... with no gaps
  std::string time;    // UTC, utc_timestamp()
  std::string actor;   // token id, "local:<user>", or "guard"
  std::string action;  // "registry.register", "registry.promote", "serve.load", ...
  std::string subject;  // what it acted on, e.g. "fashion@3"
  std::string details;  // JSON text, hashed as stored
  std::string prev_hash;   // entry_hash of seq-1; 64 zeros for the first entry
  std::string entry_hash;  // hex SHA-256 of canonical()

  // The bytes the entry hash and the Merkle leaf cover: every field but entry_hash.
  std::string canonical() const;
  nlohmann::json to_json() const;
};

struct Checkpoint {
  std::string origin;
  int64_t size = 0;
  std::string root_hex;
};

struct AuditVerdict {
  bool ok = true;
  int64_t entries = 0;
  int64_t first_bad = 0;   // the first entry found bad (0 when none, or when only the root differs)
  std::string problem;     // empty when ok
  std::vector<std::string> checked;  // what was checked, e.g. "chain of 12 entries", "checkpoint 12"
  // Entries after the registry's checkpoint: chained but not yet signed. After a crash between a
  // commit and its checkpoint there is one; anything more deserves a look (they could have been
  // appended by someone without the log key).
  int64_t uncovered = 0;
};

class AuditLog {
 public:
  // `dir` is the registry directory: log.key / log.pub sign and check its checkpoints there.
  AuditLog(Database& db, std::string dir) : db_(db), dir_(std::move(dir)) {}

  // Appends one entry; call inside the transaction that makes the change it records.
  AuditEntry append(const std::string& actor, const std::string& action, const std::string& subject,
                    const nlohmann::json& details);
  // Signs the log as it stands and replaces audit.checkpoint (write, fsync, rename). Call after
  // the transaction commits: a checkpoint may lag the log (a crash between the two) but never
  // runs ahead of it. On PostgreSQL, writers on every machine take turns (an advisory lock), so
  // the file only ever grows.
  void write_checkpoint();

  // Entries with seq > after_seq and time >= since_time (a utc_timestamp() prefix; "" = all).
  std::vector<AuditEntry> entries(int64_t after_seq = 0, const std::string& since_time = "") const;

  // Checks sequence, entry hashes, chain, then the registry's checkpoint and, when given, a
  // checkpoint kept elsewhere (its text). Never throws for a bad log: the verdict says what failed.
  // `pinned_log_key_pem`, when given (`audit verify --log-key FILE`, a copy kept outside the
  // registry), is the key the checkpoints must be signed with: a registry whose log.pub is another
  // key fails, named as re-keyed, and every checkpoint is checked against the pinned key.
  AuditVerdict verify(const std::string& external_checkpoint = "", const std::string& pinned_log_key_pem = "") const;

  std::string origin() const;

 private:
  Database& db_;
  std::string dir_;
};

// RFC 6962 Merkle tree hash over leaf inputs (each leaf hashed as SHA-256(0x00 || data)), raw
// 32-byte result; the empty tree hashes to SHA-256("").
std::string merkle_root(const std::vector<std::string>& leaves);
Checkpoint parse_checkpoint_body(const std::string& body);

}  // namespace bulwark::registry
