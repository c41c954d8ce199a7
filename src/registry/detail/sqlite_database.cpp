#include "registry/detail/sqlite_database.h"

#include <sqlite3.h>

#include <filesystem>
#include <regex>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/files.h"

namespace bulwark::registry::detail {
namespace {

// The same tables and columns as the PostgreSQL schema (postgres_database.cpp); only the types
// are spelled SQLite's way. `rowid` of run_metrics is SQLite's implicit insertion order.
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
CREATE TABLE IF NOT EXISTS audit_signatures(seq INTEGER PRIMARY KEY, signature TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS stage_statements(
  model TEXT NOT NULL, counter INTEGER NOT NULL, statement TEXT NOT NULL, signature TEXT, key_id TEXT,
  PRIMARY KEY(model, counter));
CREATE TABLE IF NOT EXISTS runs(
  run_id TEXT PRIMARY KEY, run_name TEXT NOT NULL, kind TEXT NOT NULL,
  status TEXT NOT NULL CHECK(status IN ('RUNNING', 'FINISHED', 'FAILED', 'KILLED')),
  start_time TEXT NOT NULL, end_time TEXT, "user" TEXT NOT NULL, command TEXT NOT NULL,
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

void bind_all(SQLite::Statement& q, const Params& params) {
  int i = 1;
  for (const Value& v : params) {
    if (const auto* s = std::get_if<std::string>(&v))
      q.bind(i, *s);
    else if (const auto* n = std::get_if<int64_t>(&v))
      q.bind(i, *n);
    else if (const auto* d = std::get_if<double>(&v))
      q.bind(i, *d);
    else
      q.bind(i);
    ++i;
  }
}

class SqliteDatabase final : public Database {
 public:
  explicit SqliteDatabase(std::unique_ptr<SQLite::Database> db) : db_(std::move(db)) {}

  Backend backend() const override { return Backend::kSqlite; }
  void exec(const std::string& sql) override { db_->exec(sql); }

  int64_t execute(const std::string& sql, const Params& params) override {
    SQLite::Statement q(*db_, sql);
    bind_all(q, params);
    return q.exec();
  }

  std::vector<Row> query(const std::string& sql, const Params& params) override {
    SQLite::Statement q(*db_, sql);
    bind_all(q, params);
    std::vector<Row> rows;
    while (q.executeStep()) {
      std::vector<Value> cells;
      cells.reserve(static_cast<size_t>(q.getColumnCount()));
      for (int i = 0; i < q.getColumnCount(); ++i) {
        const SQLite::Column c = q.getColumn(i);
        if (c.isNull())
          cells.emplace_back(nullptr);
        else if (c.isInteger())
          cells.emplace_back(static_cast<int64_t>(c.getInt64()));
        else if (c.isFloat())
          cells.emplace_back(c.getDouble());
        else
          cells.emplace_back(c.getString());
      }
      rows.emplace_back(std::move(cells));
    }
    return rows;
  }

  void begin_write() override { db_->exec("BEGIN IMMEDIATE"); }
  void commit() override { db_->exec("COMMIT"); }
  void rollback() noexcept override {
    try {
      if (sqlite3_get_autocommit(db_->getHandle()) == 0) db_->exec("ROLLBACK");
    } catch (...) {
      // Nothing to report to: the transaction is gone either way once the connection closes.
    }
  }
  // The IMMEDIATE transaction already holds the database's one write lock.
  void lock_rows(const std::string&, const Params&) override {}
  void lock_table(const std::string&) override {}
  std::unique_ptr<SessionLock> lock_checkpoints() override { return nullptr; }

 protected:
  SQLite::Database* sqlite_handle() override { return db_.get(); }

 private:
  std::unique_ptr<SQLite::Database> db_;
};

}  // namespace

std::unique_ptr<Database> open_sqlite(const std::string& path, bool create) {
  if (!create && !file_exists(path))
    throw not_found(path + ": no registry database here (run `bulwark registry init`)");
  const int flags = SQLite::OPEN_READWRITE | (create ? SQLite::OPEN_CREATE : 0);
  auto db = std::make_unique<SQLite::Database>(path, flags, 10000);
  db->exec("PRAGMA journal_mode=WAL");
  db->exec("PRAGMA synchronous=FULL");
  db->exec("PRAGMA foreign_keys=ON");
  // On an existing registry this adds only the tables added since it was made (IF NOT EXISTS).
  db->exec(kSchema);
  return std::make_unique<SqliteDatabase>(std::move(db));
}

namespace {

// `path` as the path of an SQLite file: URI (RFC 3986 percent-encoding of what a path may not hold).
// An absolute path gets an empty authority, "file:///...", so one starting "//" is not read as a host.
std::string sqlite_uri(const std::string& path, const std::string& query) {
  static const char* kHex = "0123456789ABCDEF";
  std::string out = !path.empty() && path.front() == '/' ? "file://" : "file:";
  for (const unsigned char c : path) {
    if (c == '%' || c == '?' || c == '#' || c < 0x21 || c >= 0x7f) {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + "?" + query;
}

// The tables kSchema makes: a registry made by an older bulwark may lack some, which a read-only
// handle cannot add.
std::vector<std::string> schema_tables() {
  static const std::regex kTable("CREATE TABLE IF NOT EXISTS (\\w+)");
  std::vector<std::string> out;
  const std::string schema = kSchema;
  for (std::sregex_iterator it(schema.begin(), schema.end(), kTable), end; it != end; ++it) out.push_back((*it)[1]);
  return out;
}

}  // namespace

std::unique_ptr<Database> open_sqlite_read_only(const std::string& path) {
  if (!file_exists(path)) throw not_found(path + ": no registry database here (run `bulwark registry init`)");
  const int flags = SQLite::OPEN_READONLY | SQLite::OPEN_URI;
  std::unique_ptr<SQLite::Database> db;
  try {
    db = std::make_unique<SQLite::Database>(sqlite_uri(path, "mode=ro"), flags, 10000);
    db->exec("SELECT count(*) FROM sqlite_master");  // a WAL database is read, or refused, here
  } catch (const SQLite::Exception& e) {
    // Only "cannot open the WAL index" (no writer keeps a -shm, and none can be made here: a
    // read-only file system, or a directory this user cannot write) falls
    // back to a snapshot; and never when a -wal holds commits the snapshot would not see.
    const int code = e.getExtendedErrorCode();
    const bool cannot_open_index = e.getErrorCode() == SQLITE_CANTOPEN || code == SQLITE_READONLY_CANTINIT ||
                                   code == SQLITE_READONLY_DIRECTORY;
    if (!cannot_open_index) throw;
    std::error_code ec;
    const auto wal = std::filesystem::file_size(path + "-wal", ec);
    if (!ec && wal > 0) {
      throw io_error(path + ": read-only, and its write-ahead log (" + std::to_string(wal) +
                     " bytes) holds commits that cannot be read without the writer's -shm file: mount the registry "
                     "read-write, or checkpoint it where it is written");
    }
    db = std::make_unique<SQLite::Database>(sqlite_uri(path, "immutable=1"), flags, 10000);
    db->exec("SELECT count(*) FROM sqlite_master");
  }
  std::vector<std::string> missing;
  for (const auto& table : schema_tables()) {
    SQLite::Statement q(*db, "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?");
    q.bind(1, table);
    if (q.executeStep() && q.getColumn(0).getInt() == 0) missing.push_back(table);
  }
  if (!missing.empty()) {
    std::string names;
    for (const auto& m : missing) names += (names.empty() ? "" : ", ") + m;
    throw data_format(path + ": made by an older bulwark (no table " + names +
                      "), and read-only: run any `bulwark registry` command on it read-write once to add them");
  }
  db->exec("PRAGMA foreign_keys=ON");
  return std::make_unique<SqliteDatabase>(std::move(db));
}

}  // namespace bulwark::registry::detail
