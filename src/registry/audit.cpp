#include "registry/audit.h"

#include <cstdio>
#include <filesystem>
#include <iostream>
#include <map>
#include <optional>

#include "core/digest.h"
#include "core/error.h"
#include "core/files.h"
#include "registry/db.h"
#include "registry/signing.h"

namespace bulwark::registry {
namespace {

using nlohmann::json;

const std::string kZeroHash(64, '0');

AuditEntry read_entry(const Row& r) {
  AuditEntry e;
  e.seq = r.int64(0);
  e.time = r.text(1);
  e.actor = r.text(2);
  e.action = r.text(3);
  e.subject = r.text(4);
  e.details = r.text(5);
  e.prev_hash = r.text(6);
  e.entry_hash = r.text(7);
  return e;
}

std::string checkpoint_path(const std::string& dir) { return dir + "/audit.checkpoint"; }

// Checks one signed checkpoint against the entries; returns "" when it holds.
std::string check_checkpoint(const std::string& note, const std::string& label, const std::string& origin,
                             const PublicKey& key, const std::vector<AuditEntry>& entries, AuditVerdict& verdict) {
  Checkpoint cp;
  try {
    cp = parse_checkpoint_body(open_note(note, origin, key));
  } catch (const std::exception& e) {
    return label + " does not verify: " + e.what();
  }
  if (cp.origin != origin) return label + " is for log '" + cp.origin + "', not '" + origin + "'";
  const auto n = static_cast<int64_t>(entries.size());
  if (cp.size > n) {
    verdict.first_bad = n + 1;
    return "log truncated: " + label + " covers " + std::to_string(cp.size) + " entries but the log has " +
           std::to_string(n) + " (entry " + std::to_string(n + 1) + " onwards is gone)";
  }
  std::vector<std::string> leaves;
  for (int64_t i = 0; i < cp.size; ++i) leaves.push_back(entries[static_cast<size_t>(i)].canonical());
  if (hex_encode(merkle_root(leaves)) != cp.root_hex) {
    return "history rewritten: entries 1.." + std::to_string(cp.size) + " do not hash to the root signed in " + label;
  }
  verdict.checked.push_back(label + " (" + std::to_string(cp.size) + " entries)");
  if (label == "the registry's checkpoint") verdict.uncovered = n - cp.size;
  return "";
}

// Whether `e` carries a valid entry signature by `key` among `signatures` (seq -> base64 DER).
bool entry_signed(const PublicKey& key, const std::string& origin, const AuditEntry& e,
                  const std::map<int64_t, std::string>& signatures) {
  const auto sig = signatures.find(e.seq);
  if (sig == signatures.end()) return false;
  try {
    return key.verify(entry_signing_input(origin, e.entry_hash), base64_decode(sig->second));
  } catch (const std::exception&) {
    return false;  // not base64: not a signature
  }
}

// Every checkpoint in a witness directory against the registry's own (already checked against the
// entries): a witnessed size beyond it is a rollback; otherwise an RFC 9162 consistency proof from
// the witnessed root to the registry's root must hold. Returns "" when all do.
std::string check_witness(const std::string& dir, const std::string& origin, const PublicKey& key,
                          const std::vector<AuditEntry>& entries, AuditVerdict& verdict) {
  if (!directory_exists(dir)) return "witness directory " + dir + " does not exist";
  const int64_t size = verdict.entries - verdict.uncovered;  // the registry's checkpoint
  std::vector<std::string> leaf_hashes;
  for (int64_t i = 0; i < size; ++i) leaf_hashes.push_back(merkle_leaf_hash(entries[static_cast<size_t>(i)].canonical()));
  MerkleFrontier head;
  for (int64_t i = 0; i < size; ++i) head.append(entries[static_cast<size_t>(i)].canonical());
  int witnessed = 0;
  for (const auto& item : std::filesystem::directory_iterator(dir)) {
    const std::string file = item.path().filename().string();
    if (file.rfind("checkpoint.", 0) != 0) continue;
    Checkpoint cp;
    try {
      cp = parse_checkpoint_body(open_note(read_file(item.path().string()), origin, key));
    } catch (const std::exception& e) {
      return "witnessed " + file + " does not verify with the log key: " + e.what();
    }
    if (cp.size > size) {
      return "log rolled back: " + file + " in the witness covers " + std::to_string(cp.size) +
             " entries, the registry's checkpoint only " + std::to_string(size) +
             " (an older checkpoint restored over a truncated log)";
    }
    const std::string root_m = hex_decode(cp.root_hex);
    const auto proof = cp.size > 0 ? consistency_proof(leaf_hashes, static_cast<size_t>(cp.size)) : std::vector<std::string>{};
    if (!verify_consistency(static_cast<uint64_t>(cp.size), static_cast<uint64_t>(size), root_m, head.root(), proof)) {
      return "history rewritten: the registry's checkpoint (" + std::to_string(size) + " entries) is not consistent with " +
             file + " in the witness (RFC 9162 consistency proof fails)";
    }
    ++witnessed;
  }
  verdict.checked.push_back("consistent with " + std::to_string(witnessed) + " witnessed checkpoint(s)");
  return "";
}

}  // namespace

std::string AuditEntry::canonical() const {
  return json::array({seq, time, actor, action, subject, details, prev_hash}).dump();
}

json AuditEntry::to_json() const {
  json d = json::parse(details, nullptr, false);
  return {{"seq", seq},         {"time", time},           {"actor", actor},          {"action", action},
          {"subject", subject}, {"details", d.is_discarded() ? json(details) : d}, {"prev_hash", prev_hash},
          {"entry_hash", entry_hash}};
}

Checkpoint parse_checkpoint_body(const std::string& body) {
  // origin \n size \n base64(root) \n [extension lines]
  std::vector<std::string> lines;
  size_t start = 0;
  for (size_t nl; (nl = body.find('\n', start)) != std::string::npos; start = nl + 1) {
    lines.push_back(body.substr(start, nl - start));
  }
  if (lines.size() < 3) throw data_format("checkpoint: expected origin, size and root lines");
  Checkpoint cp;
  cp.origin = lines[0];
  try {
    size_t used = 0;
    cp.size = std::stoll(lines[1], &used);
    if (used != lines[1].size() || cp.size < 0) throw std::invalid_argument("size");
  } catch (const std::exception&) {
    throw data_format("checkpoint: tree size '" + lines[1] + "' is not a non-negative integer");
  }
  const std::string root = base64_decode(lines[2]);
  if (root.size() != 32) throw data_format("checkpoint: root hash is not 32 bytes");
  cp.root_hex = hex_encode(root);
  return cp;
}

std::string AuditLog::origin() const {
  const auto rows = db_.query("SELECT value FROM meta WHERE key = 'origin'");
  if (rows.empty()) throw data_format("registry database has no log origin (not made by `registry init`)");
  return rows[0].text(0);
}

void AuditLog::pin_log_key(const std::string& public_pem) {
  PublicKey::from_pem(public_pem, "--log-key");  // refused now, not at the first append
  pinned_log_key_pem_ = public_pem;
}

PublicKey AuditLog::log_key() const {
  if (!pinned_log_key_pem_.empty()) return PublicKey::from_pem(pinned_log_key_pem_, "--log-key");
  return PublicKey::from_pem(read_file(dir_ + "/log.pub"), dir_ + "/log.pub");
}

std::string entry_signing_input(const std::string& origin, const std::string& entry_hash) {
  return "bulwark-audit-entry/v1\n" + origin + "\n" + entry_hash + "\n";
}

MerkleFrontier AuditLog::extend_frontier(std::vector<AuditEntry>* tail_out) const {
  const std::string name = origin();
  const PublicKey key = log_key();
  // Entries the signed checkpoint covers need no entry signature (a registry older than them has
  // none); every entry after it must carry one. Neither the frontier nor the checkpoint size is
  // taken from the database: the frontier is used only when it reproduces the signed root.
  Checkpoint cp{name, 0, hex_encode(sha256_raw(""))};
  if (file_exists(checkpoint_path(dir_))) {
    try {
      cp = parse_checkpoint_body(open_note(read_file(checkpoint_path(dir_)), name, key));
    } catch (const std::exception& e) {
      throw data_format("audit log: the registry's checkpoint does not verify with the log key: " +
                        std::string(e.what()));
    }
  }
  MerkleFrontier f;
  const auto stored = db_.query("SELECT value FROM meta WHERE key = 'audit_frontier'");
  if (!stored.empty()) {
    try {
      auto s = MerkleFrontier::parse(stored[0].text(0));
      if (s.size == cp.size && hex_encode(s.root()) == cp.root_hex) f = std::move(s);
    } catch (const Error&) {
      // rebuilt below
    }
  }
  std::string prev = kZeroHash;
  // The stored frontier stands for entries 1..f.size without reading them; the rightmost perfect
  // subtree is recomputed from its rows, so the last covered entry — the one the next append
  // chains onto — is the one the checkpoint signed, not a row rewritten since (on average a few
  // rows; all of them when the size is a power of two).
  const int64_t last_subtree = f.size & -f.size;
  auto rows = entries(f.size - last_subtree);
  if (f.size > 0) {
    std::vector<std::string> leaves;
    for (int64_t i = 0; i < last_subtree && i < static_cast<int64_t>(rows.size()); ++i) {
      leaves.push_back(rows[static_cast<size_t>(i)].canonical());
    }
    const AuditEntry* last = static_cast<int64_t>(rows.size()) >= last_subtree ? &rows[static_cast<size_t>(last_subtree - 1)] : nullptr;
    if (static_cast<int64_t>(leaves.size()) != last_subtree || merkle_root(leaves) != f.subtrees.back() ||
        last->seq != f.size || hex_encode(sha256_raw(last->canonical())) != last->entry_hash) {
      throw data_format("audit log: entries " + std::to_string(f.size - last_subtree + 1) + ".." + std::to_string(f.size) +
                        " do not hash to the root signed in the registry's checkpoint: history rewritten");
    }
    prev = last->entry_hash;
    rows.erase(rows.begin(), rows.begin() + last_subtree);
  }
  const auto& tail = rows;
  std::map<int64_t, std::string> signatures;
  for (const auto& r : db_.query("SELECT seq, signature FROM audit_signatures WHERE seq > ?", {cp.size})) {
    signatures[r.int64(0)] = r.text(1);
  }
  for (const auto& e : tail) {
    const std::string what = "audit log: entry " + std::to_string(e.seq) + " (" + e.action + " " + e.subject + ")";
    if (e.seq != f.size + 1) throw data_format("audit log: entry " + std::to_string(f.size + 1) + " is missing");
    if (hex_encode(sha256_raw(e.canonical())) != e.entry_hash) throw data_format(what + " does not match its hash");
    if (e.prev_hash != prev) throw data_format(what + " does not chain to the entry before it");
    if (e.seq > cp.size) {
      if (!entry_signed(key, name, e, signatures)) {
        throw data_format(what + " is after the last checkpoint (" + std::to_string(cp.size) +
                          ") and not signed by the log key: appended by someone without it; nothing is chained "
                          "or checkpointed onto it");
      }
    }
    f.append(e.canonical());
    prev = e.entry_hash;
    if (f.size == cp.size && hex_encode(f.root()) != cp.root_hex) {
      throw data_format("audit log: entries 1.." + std::to_string(cp.size) +
                        " do not hash to the root signed in the registry's checkpoint: history rewritten");
    }
  }
  if (f.size < cp.size) {
    throw data_format("audit log truncated: the registry's checkpoint covers " + std::to_string(cp.size) +
                      " entries but the log has " + std::to_string(f.size));
  }
  if (tail_out != nullptr) *tail_out = tail;
  return f;
}

AuditEntry AuditLog::append(const std::string& actor, const std::string& action, const std::string& subject,
                            const json& details) {
  AuditEntry e;
  e.prev_hash = kZeroHash;
  // Held to the end of the caller's transaction: the entry read next stays the last one.
  db_.lock_table("audit");
  // The entries since the last checkpoint must all be the log key's before one more chains onto them.
  (void)extend_frontier();
  const auto last = db_.query("SELECT seq, entry_hash FROM audit ORDER BY seq DESC LIMIT 1");
  if (!last.empty()) {
    e.seq = last[0].int64(0);
    e.prev_hash = last[0].text(1);
  }
  ++e.seq;
  e.time = utc_timestamp();
  e.actor = actor;
  e.action = action;
  e.subject = subject;
  e.details = details.dump();
  e.entry_hash = hex_encode(sha256_raw(e.canonical()));
  const auto key = SigningKey::load(dir_ + "/log.key");
  if (!pinned_log_key_pem_.empty() && key.key_id() != log_key().key_id()) {
    throw data_format(dir_ + "/log.key is not the pinned log key (--log-key): the registry was re-keyed; refusing to "
                             "write to its log");
  }
  db_.execute("INSERT INTO audit(seq, time, actor, action, subject, details, prev_hash, entry_hash) "
              "VALUES(?, ?, ?, ?, ?, ?, ?, ?)",
              {e.seq, e.time, e.actor, e.action, e.subject, e.details, e.prev_hash, e.entry_hash});
  db_.execute("INSERT INTO audit_signatures(seq, signature) VALUES(?, ?) ON CONFLICT(seq) DO UPDATE SET signature = "
              "excluded.signature",
              {e.seq, base64_encode(key.sign(entry_signing_input(origin(), e.entry_hash)))});
  return e;
}

void AuditLog::write_checkpoint() {
  const auto turn = db_.lock_checkpoints();
  // One transaction: the frontier and the checkpoint file move together, in log order (on SQLite
  // the write lock orders writers on one machine; on PostgreSQL the session lock above).
  WriteTransaction tx(db_);
  const MerkleFrontier f = extend_frontier();
  db_.execute("INSERT INTO meta(key, value) VALUES('audit_frontier', ?) ON CONFLICT(key) DO UPDATE SET value = "
              "excluded.value",
              {f.serialize()});
  const std::string name = origin();
  const std::string body = name + "\n" + std::to_string(f.size) + "\n" + base64_encode(f.root()) + "\n";
  const auto key = SigningKey::load(dir_ + "/log.key");
  atomic_write_file(checkpoint_path(dir_), sign_note(body, name, key));
  tx.commit();
}

std::string AuditLog::publish_checkpoint(const std::string& dir) const {
  if (!directory_exists(dir)) throw not_found("witness directory " + dir + " does not exist");
  const std::string note = read_file(checkpoint_path(dir_));
  const auto cp = parse_checkpoint_body(open_note(note, origin(), log_key()));
  const std::string path = dir + "/checkpoint." + std::to_string(cp.size);
  if (file_exists(path)) {
    const auto have = parse_checkpoint_body(open_note(read_file(path), origin(), log_key()));
    if (have.root_hex != cp.root_hex) {
      throw data_format("fork: " + path + " witnessed another root for the same " + std::to_string(cp.size) +
                        " entries; the log was rewritten since (kept the witnessed one)");
    }
    return path;
  }
  atomic_write_file(path, note);
  return path;
}

std::vector<AuditEntry> AuditLog::entries(int64_t after_seq, const std::string& since_time) const {
  const auto rows = db_.query("SELECT seq, time, actor, action, subject, details, prev_hash, entry_hash FROM audit "
                              "WHERE seq > ? AND time >= ? ORDER BY seq",
                              {after_seq, since_time});
  std::vector<AuditEntry> out;
  out.reserve(rows.size());
  for (const auto& r : rows) out.push_back(read_entry(r));
  return out;
}

AuditVerdict AuditLog::verify(const AuditVerifyOptions& o) const {
  AuditVerdict v;
  // The entries and the checkpoint file read as one state: no checkpoint newer than the entries.
  const auto turn = db_.lock_checkpoints();
  const auto all = entries();
  v.entries = static_cast<int64_t>(all.size());
  const auto fail = [&v](int64_t seq, std::string why) {
    v.ok = false;
    if (v.first_bad == 0) v.first_bad = seq;
    v.problem = std::move(why);
    return v;
  };
  std::string prev = kZeroHash;
  for (size_t i = 0; i < all.size(); ++i) {
    const auto& e = all[i];
    const auto expected = static_cast<int64_t>(i) + 1;
    if (e.seq != expected) {
      return fail(expected, "entry " + std::to_string(expected) + " is missing (the next entry is " +
                                std::to_string(e.seq) + "): deleted");
    }
    if (hex_encode(sha256_raw(e.canonical())) != e.entry_hash) {
      return fail(e.seq, "entry " + std::to_string(e.seq) + " (" + e.action + " " + e.subject +
                             ") does not match its hash: edited");
    }
    if (e.prev_hash != prev) {
      return fail(e.seq, "entry " + std::to_string(e.seq) + " (" + e.action + " " + e.subject +
                             ") does not chain to entry " + std::to_string(e.seq - 1) +
                             ": entries deleted, inserted or reordered before it");
    }
    prev = e.entry_hash;
  }
  v.checked.push_back("hash chain (" + std::to_string(all.size()) + " entries)");

  const std::string name = origin();
  const auto registry_key = PublicKey::from_pem(read_file(dir_ + "/log.pub"), dir_ + "/log.pub");
  const std::string pinned = !o.pinned_log_key_pem.empty() ? o.pinned_log_key_pem : pinned_log_key_pem_;
  const auto key = pinned.empty() ? registry_key : PublicKey::from_pem(pinned, "--log-key");
  if (key.key_id() != registry_key.key_id()) {
    v.ok = false;
    v.problem = "the registry's log key (" + dir_ + "/log.pub, key id " + registry_key.key_id().substr(0, 16) +
                ") is not the pinned one (--log-key, key id " + key.key_id().substr(0, 16) +
                "): the log was re-keyed, so its checkpoints prove nothing about its history";
    return v;
  }
  if (!pinned.empty()) v.checked.push_back("log key pinned (" + key.key_id().substr(0, 16) + ")");
  std::string problem;
  if (!file_exists(checkpoint_path(dir_))) {
    if (!all.empty()) problem = checkpoint_path(dir_) + " is missing (the log has entries)";
  } else {
    problem = check_checkpoint(read_file(checkpoint_path(dir_)), "the registry's checkpoint", name, key, all, v);
  }
  if (problem.empty() && !o.external_checkpoint.empty()) {
    problem = check_checkpoint(o.external_checkpoint, "the given checkpoint", name, key, all, v);
  }
  if (!problem.empty()) return fail(v.first_bad, problem);

  // Entries after the checkpoint: each must be the log key's own.
  const int64_t covered = v.entries - v.uncovered;
  std::map<int64_t, std::string> signatures;
  for (const auto& r : db_.query("SELECT seq, signature FROM audit_signatures WHERE seq > ?", {covered})) {
    signatures[r.int64(0)] = r.text(1);
  }
  for (int64_t seq = covered + 1; seq <= v.entries; ++seq) {
    const auto& e = all[static_cast<size_t>(seq - 1)];
    if (!entry_signed(key, name, e, signatures)) {
      return fail(seq, "entry " + std::to_string(seq) + " (" + e.action + " " + e.subject +
                           ") is after the last checkpoint (" + std::to_string(covered) +
                           " entries) and not signed by the log key: appended by someone without the key");
    }
  }
  if (v.uncovered > 0) v.checked.push_back("entry signatures after the checkpoint (" + std::to_string(v.uncovered) + ")");

  if (!o.witness_dir.empty()) {
    const std::string why = check_witness(o.witness_dir, name, key, all, v);
    if (!why.empty()) return fail(0, why);
  }
  if (o.entries_out != nullptr) *o.entries_out = all;
  return v;
}

}  // namespace bulwark::registry
