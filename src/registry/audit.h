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
// Every entry is also signed on its own by the log key, in the transaction that writes it, so an
// entry after the last checkpoint (a crash between commit and checkpoint, or another writer's
// checkpoint not yet written) still proves who wrote it: one appended by someone without the key
// is named by verify and refused by append, which will not chain onto it, and never signed into a
// checkpoint. The Merkle frontier (registry/merkle.h) is kept in the database, so appending and
// checkpointing read only the entries since the last checkpoint. Checkpoints copied to a witness
// directory (`audit checkpoint --publish`) are checked by RFC 9162 consistency proofs: an older
// checkpoint restored with a truncated log is caught as a rollback.
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
#include "registry/merkle.h"
#include "registry/signing.h"

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

struct AuditVerifyOptions {
  std::string external_checkpoint;  // a checkpoint's text kept elsewhere (`audit verify --checkpoint`)
  std::string pinned_log_key_pem;   // `--log-key`: the key checkpoints must be signed with
  std::string witness_dir;          // `--witness DIR`: every *.checkpoint in it must be a prefix of the log
  // When given: the entries exactly as verified, so a caller that looks something up in the log
  // reads the same state that was checked, not a second read an attacker could change in between.
  std::vector<AuditEntry>* entries_out = nullptr;
};

class AuditLog {
 public:
  // `dir` is the registry directory: log.key / log.pub sign and check its checkpoints there.
  AuditLog(Database& db, std::string dir) : db_(db), dir_(std::move(dir)) {}

  // The log's public key from outside the registry (a server's --log-key): appends and verify check
  // against it instead of <dir>/log.pub, which anyone who can write the registry can replace.
  void pin_log_key(const std::string& public_pem);

  // Appends one entry, signed by the log key; call inside the transaction that makes the change it
  // records. Refuses (data_format, naming the entry) to chain onto entries after the last
  // checkpoint that the log key did not sign.
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
  // Entries after the checkpoint must each carry a valid entry signature. With a witness
  // directory, every witnessed checkpoint must be consistent with the registry's (RFC 9162 proof).
  AuditVerdict verify(const AuditVerifyOptions& options) const;
  AuditVerdict verify(const std::string& external_checkpoint = "", const std::string& pinned_log_key_pem = "") const {
    return verify(AuditVerifyOptions{external_checkpoint, pinned_log_key_pem, "", nullptr});
  }
  // Copies the registry's current checkpoint into `dir` as checkpoint.<size> (write, fsync,
  // rename); returns its path. A different checkpoint already witnessed at the same size is a fork
  // of the log and is refused (data_format) — the witness keeps the first.
  std::string publish_checkpoint(const std::string& dir) const;

  std::string origin() const;

 private:
  PublicKey log_key() const;
  // The entries after the stored frontier, checked (sequence, hash, chain, entry signature) and
  // folded into it. Throws data_format naming the first bad entry.
  MerkleFrontier extend_frontier(std::vector<AuditEntry>* tail = nullptr) const;

  Database& db_;
  std::string dir_;
  std::string pinned_log_key_pem_;
};

Checkpoint parse_checkpoint_body(const std::string& body);
// The bytes an entry signature covers: the log's origin and the entry hash, domain-separated.
std::string entry_signing_input(const std::string& origin, const std::string& entry_hash);

}  // namespace bulwark::registry
