#include "registry/audit.h"

#include <cstdio>
#include <iostream>

#include "core/digest.h"
#include "core/error.h"
#include "core/files.h"
#include "registry/db.h"
#include "registry/signing.h"

namespace bulwark::registry {
namespace {

using nlohmann::json;

const std::string kZeroHash(64, '0');

std::string leaf_hash(const std::string& data) { return sha256_raw(std::string(1, '\0') + data); }

// RFC 6962 §2.1: split at the largest power of two smaller than n.
std::string subtree_root(const std::vector<std::string>& leaf_hashes, size_t begin, size_t end) {
  const size_t n = end - begin;
  if (n == 1) return leaf_hashes[begin];
  size_t k = 1;
  while (k * 2 < n) k *= 2;
  return sha256_raw(std::string(1, '\1') + subtree_root(leaf_hashes, begin, begin + k) +
                    subtree_root(leaf_hashes, begin + k, end));
}

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

std::string merkle_root(const std::vector<std::string>& leaves) {
  if (leaves.empty()) return sha256_raw("");
  std::vector<std::string> hashes;
  hashes.reserve(leaves.size());
  for (const auto& l : leaves) hashes.push_back(leaf_hash(l));
  return subtree_root(hashes, 0, hashes.size());
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

AuditEntry AuditLog::append(const std::string& actor, const std::string& action, const std::string& subject,
                            const json& details) {
  AuditEntry e;
  e.prev_hash = kZeroHash;
  // Held to the end of the caller's transaction: the entry read next stays the last one.
  db_.lock_table("audit");
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
  db_.execute("INSERT INTO audit(seq, time, actor, action, subject, details, prev_hash, entry_hash) "
              "VALUES(?, ?, ?, ?, ?, ?, ?, ?)",
              {e.seq, e.time, e.actor, e.action, e.subject, e.details, e.prev_hash, e.entry_hash});
  return e;
}

void AuditLog::write_checkpoint() {
  const auto turn = db_.lock_checkpoints();
  const auto all = entries();
  std::vector<std::string> leaves;
  leaves.reserve(all.size());
  for (const auto& e : all) leaves.push_back(e.canonical());
  const std::string name = origin();
  const std::string body = name + "\n" + std::to_string(all.size()) + "\n" + base64_encode(merkle_root(leaves)) + "\n";
  const auto key = SigningKey::load(dir_ + "/log.key");
  atomic_write_file(checkpoint_path(dir_), sign_note(body, name, key));
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

AuditVerdict AuditLog::verify(const std::string& external_checkpoint, const std::string& pinned_log_key_pem) const {
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
  const auto key = pinned_log_key_pem.empty() ? PublicKey::from_pem(read_file(dir_ + "/log.pub"), dir_ + "/log.pub")
                                              : PublicKey::from_pem(pinned_log_key_pem, "--log-key");
  if (key.key_id() != registry_key.key_id()) {
    v.ok = false;
    v.problem = "the registry's log key (" + dir_ + "/log.pub, key id " + registry_key.key_id().substr(0, 16) +
                ") is not the pinned one (--log-key, key id " + key.key_id().substr(0, 16) +
                "): the log was re-keyed, so its checkpoints prove nothing about its history";
    return v;
  }
  if (!pinned_log_key_pem.empty()) v.checked.push_back("log key pinned (" + key.key_id().substr(0, 16) + ")");
  std::string problem;
  if (!file_exists(checkpoint_path(dir_))) {
    if (!all.empty()) problem = checkpoint_path(dir_) + " is missing (the log has entries)";
  } else {
    problem = check_checkpoint(read_file(checkpoint_path(dir_)), "the registry's checkpoint", name, key, all, v);
  }
  if (problem.empty() && !external_checkpoint.empty()) {
    problem = check_checkpoint(external_checkpoint, "the given checkpoint", name, key, all, v);
  }
  if (!problem.empty()) {
    v.ok = false;
    v.problem = problem;
  }
  return v;
}

}  // namespace bulwark::registry
