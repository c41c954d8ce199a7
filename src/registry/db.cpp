#include "registry/db.h"

#include <pwd.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <ctime>

#include "core/error.h"
#include "core/files.h"

namespace bulwark::registry {
namespace {

constexpr const char* kSchema = R"SQL(
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS models(
  name TEXT PRIMARY KEY, created TEXT NOT NULL, created_by TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS versions(
  model TEXT NOT NULL REFERENCES models(name), version INTEGER NOT NULL,
  stage TEXT NOT NULL DEFAULT 'none' CHECK(stage IN ('none', 'staging', 'production', 'archived')),
  files TEXT NOT NULL,   -- JSON object: file name in the version -> SHA-256 of its object
  bundle TEXT,           -- Sigstore bundle (OMS v1.0); NULL when registered with --allow-unsigned
  key_id TEXT,
  parent INTEGER,
  lineage TEXT NOT NULL, -- JSON: dataset, dataset_sha256, method, eps, seed, command
  metrics TEXT NOT NULL, -- JSON: clean, robust per attack/eps, detector figures
  created TEXT NOT NULL, created_by TEXT NOT NULL,
  PRIMARY KEY(model, version));
CREATE TABLE IF NOT EXISTS stage_changes(
  id INTEGER PRIMARY KEY, model TEXT NOT NULL, version INTEGER NOT NULL,
  from_stage TEXT NOT NULL, to_stage TEXT NOT NULL, time TEXT NOT NULL, actor TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS audit(
  seq INTEGER PRIMARY KEY, time TEXT NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL,
  subject TEXT NOT NULL, details TEXT NOT NULL, prev_hash TEXT NOT NULL, entry_hash TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs(
  run_id TEXT PRIMARY KEY, run_name TEXT NOT NULL, kind TEXT NOT NULL,
  status TEXT NOT NULL CHECK(status IN ('RUNNING', 'FINISHED', 'FAILED', 'KILLED')),
  start_time TEXT NOT NULL, end_time TEXT, user TEXT NOT NULL, command TEXT NOT NULL,
  artifact TEXT, artifact_sha256 TEXT);
CREATE TABLE IF NOT EXISTS run_params(
  run_id TEXT NOT NULL REFERENCES runs(run_id), key TEXT NOT NULL, value TEXT NOT NULL,
  PRIMARY KEY(run_id, key));
CREATE TABLE IF NOT EXISTS run_metrics(
  run_id TEXT NOT NULL REFERENCES runs(run_id), key TEXT NOT NULL, value REAL NOT NULL,
  step INTEGER NOT NULL, timestamp TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS run_tags(
  run_id TEXT NOT NULL REFERENCES runs(run_id), key TEXT NOT NULL, value TEXT NOT NULL,
  PRIMARY KEY(run_id, key));
)SQL";

}  // namespace

std::unique_ptr<SQLite::Database> open_database(const std::string& path, bool create) {
  if (!create && !file_exists(path)) throw not_found(path + ": no registry database here (run `bulwark registry init`)");
  const int flags = SQLite::OPEN_READWRITE | (create ? SQLite::OPEN_CREATE : 0);
  auto db = std::make_unique<SQLite::Database>(path, flags, 10000);
  db->exec("PRAGMA journal_mode=WAL");
  db->exec("PRAGMA synchronous=FULL");
  db->exec("PRAGMA foreign_keys=ON");
  if (create) db->exec(kSchema);
  return db;
}

std::string utc_timestamp() {
  const auto now = std::chrono::system_clock::now();
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count();
  const std::time_t seconds = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  gmtime_r(&seconds, &tm);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
                tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<int>(ms % 1000));
  return buf;
}

std::string local_actor() {
  const struct passwd* pw = ::getpwuid(::geteuid());
  return std::string("local:") + (pw != nullptr ? pw->pw_name : std::to_string(::geteuid()));
}

}  // namespace bulwark::registry
