#include "registry/detail/postgres_database.h"

#include <charconv>
#include <pqxx/pqxx>

#include "core/error.h"

namespace bulwark::registry::detail {
namespace {

// The same tables and columns as the SQLite schema (sqlite_database.cpp), in PostgreSQL's types:
// BIGINT for SQLite's 64-bit INTEGER, DOUBLE PRECISION for its 8-byte REAL, BIGSERIAL for its
// implicit row ids. run_metrics.rowid makes SQLite's implicit insertion order a column.
constexpr const char* kSchema = R"SQL(
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS models(
  name TEXT PRIMARY KEY, created TEXT NOT NULL, created_by TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS versions(
  model TEXT NOT NULL REFERENCES models(name), version BIGINT NOT NULL,
  stage TEXT NOT NULL DEFAULT 'none' CHECK(stage IN ('none', 'staging', 'production', 'archived')),
  files TEXT NOT NULL, bundle TEXT, key_id TEXT, parent BIGINT, lineage TEXT NOT NULL, metrics TEXT NOT NULL,
  created TEXT NOT NULL, created_by TEXT NOT NULL,
  PRIMARY KEY(model, version));
CREATE TABLE IF NOT EXISTS stage_changes(
  id BIGSERIAL PRIMARY KEY, model TEXT NOT NULL, version BIGINT NOT NULL,
  from_stage TEXT NOT NULL, to_stage TEXT NOT NULL, time TEXT NOT NULL, actor TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS audit(
  seq BIGINT PRIMARY KEY, time TEXT NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL,
  subject TEXT NOT NULL, details TEXT NOT NULL, prev_hash TEXT NOT NULL, entry_hash TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS audit_signatures(seq BIGINT PRIMARY KEY, signature TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS stage_statements(
  model TEXT NOT NULL, counter BIGINT NOT NULL, statement TEXT NOT NULL, signature TEXT, key_id TEXT,
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
  run_id TEXT NOT NULL REFERENCES runs(run_id), key TEXT NOT NULL, value DOUBLE PRECISION NOT NULL,
  step BIGINT NOT NULL, timestamp TEXT NOT NULL, rowid BIGSERIAL);
CREATE TABLE IF NOT EXISTS run_tags(
  run_id TEXT NOT NULL REFERENCES runs(run_id), key TEXT NOT NULL, value TEXT NOT NULL,
  PRIMARY KEY(run_id, key));
)SQL";

// Advisory lock keys (per database): one for creating the schema, one for the audit checkpoint.
constexpr int64_t kSchemaLock = 0x62756c7761726b01;      // "bulwark" 01
constexpr int64_t kCheckpointLock = 0x62756c7761726b02;  // "bulwark" 02

// The registry's waits match SQLite's 10 s busy timeout; a writer that stalls inside a transaction
// (a stopped process) loses it after a minute rather than blocking every other writer for good.
constexpr const char* kSessionSettings =
    "SET lock_timeout = '10s'; SET idle_in_transaction_session_timeout = '60s'; "
    "SET client_min_messages = warning";

// `?` placeholders to PostgreSQL's `$1, $2, ...`, leaving quoted text and identifiers alone.
std::string numbered_placeholders(const std::string& sql) {
  std::string out;
  out.reserve(sql.size() + 16);
  int n = 0;
  char quote = 0;
  for (const char c : sql) {
    if (quote != 0) {
      if (c == quote) quote = 0;
      out.push_back(c);
    } else if (c == '\'' || c == '"') {
      quote = c;
      out.push_back(c);
    } else if (c == '?') {
      out += "$" + std::to_string(++n);
    } else {
      out.push_back(c);
    }
  }
  return out;
}

std::string param_text(const Value& v) {
  if (const auto* s = std::get_if<std::string>(&v)) return *s;
  if (const auto* i = std::get_if<int64_t>(&v)) return std::to_string(*i);
  char buf[32];  // shortest text that reads back as the same double
  const auto r = std::to_chars(buf, buf + sizeof buf, std::get<double>(v));
  return std::string(buf, r.ptr);
}

std::vector<Row> rows_of(const pqxx::result& r) {
  std::vector<Row> rows;
  rows.reserve(r.size());
  for (const auto& row : r) {
    std::vector<Value> cells;
    cells.reserve(row.size());
    for (const auto& field : row) {
      if (field.is_null())
        cells.emplace_back(nullptr);
      else
        cells.emplace_back(std::string(field.c_str(), field.size()));
    }
    rows.emplace_back(std::move(cells));
  }
  return rows;
}

class PostgresDatabase;

class AdvisoryLock final : public SessionLock {
 public:
  AdvisoryLock(PostgresDatabase& db, int64_t key) : db_(db), key_(key) {}
  ~AdvisoryLock() override;

 private:
  PostgresDatabase& db_;
  int64_t key_;
};

class PostgresDatabase final : public Database {
 public:
  explicit PostgresDatabase(const RegistryLocation& location) : where_(location.display) {
    try {
      conn_ = std::make_unique<pqxx::connection>(location.conninfo);
    } catch (const std::exception& e) {
      throw unavailable(where_ + ": cannot connect to PostgreSQL: " + trimmed(e.what()));
    }
    exec(kSessionSettings);
  }

  Backend backend() const override { return Backend::kPostgres; }

  void exec(const std::string& sql) override {
    run([&](pqxx::transaction_base& t) { t.exec(sql); });
  }

  int64_t execute(const std::string& sql, const Params& params) override {
    int64_t changed = 0;
    run([&](pqxx::transaction_base& t) {
      changed = static_cast<int64_t>(exec_params(t, sql, params).affected_rows());
    });
    return changed;
  }

  std::vector<Row> query(const std::string& sql, const Params& params) override {
    std::vector<Row> rows;
    run([&](pqxx::transaction_base& t) { rows = rows_of(exec_params(t, sql, params)); });
    return rows;
  }

  void begin_write() override {
    if (tx_) throw internal_error(where_ + ": a write transaction is already open on this handle");
    guarded([&] { tx_ = std::make_unique<pqxx::work>(*conn_); });
  }

  void commit() override {
    if (!tx_) throw internal_error(where_ + ": commit without a write transaction");
    guarded([&] { tx_->commit(); });
    tx_.reset();
  }

  void rollback() noexcept override {
    if (!tx_) return;
    try {
      tx_->abort();
    } catch (...) {
      // The server ends the transaction itself when the connection goes.
    }
    tx_.reset();
  }

  void lock_rows(const std::string& select, const Params& params) override { query(select + " FOR UPDATE", params); }

  void lock_table(const std::string& table) override { exec("LOCK TABLE " + table + " IN EXCLUSIVE MODE"); }

  std::unique_ptr<SessionLock> lock_checkpoints() override {
    execute("SELECT pg_advisory_lock(?)", {kCheckpointLock});
    return std::make_unique<AdvisoryLock>(*this, kCheckpointLock);
  }

  void create_schema() {
    WriteTransaction tx(*this);
    execute("SELECT pg_advisory_xact_lock(?)", {kSchemaLock});  // two inits at once would collide in the catalog
    exec(kSchema);
    tx.commit();
  }

  bool has_schema() {
    return query("SELECT to_regclass('meta') IS NOT NULL AND to_regclass('audit') IS NOT NULL", {}).at(0).text(0) ==
           "t";
  }

 private:
  static std::string trimmed(std::string s) {
    while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
    return s;
  }

  static pqxx::result exec_params(pqxx::transaction_base& t, const std::string& sql, const Params& params) {
    std::vector<std::string> texts;
    texts.reserve(params.size());
    for (const Value& v : params) texts.push_back(std::holds_alternative<std::nullptr_t>(v) ? "" : param_text(v));
    std::vector<const char*> pointers;
    for (size_t i = 0; i < params.size(); ++i) {
      pointers.push_back(std::holds_alternative<std::nullptr_t>(params[i]) ? nullptr : texts[i].c_str());
    }
    return t.exec_params(numbered_placeholders(sql), pqxx::prepare::make_dynamic_params(pointers));
  }

  // Runs `f` in the open write transaction, or else in autocommit mode (each statement its own
  // transaction, as SQLite does outside BEGIN).
  template <typename F>
  void run(F f) {
    guarded([&] {
      if (tx_) {
        f(*tx_);
        return;
      }
      pqxx::nontransaction t(*conn_);
      f(t);
    });
  }

  // libpqxx's exceptions as the registry's errors: a lost connection or a lock wait that timed out
  // is `unavailable` (try again), anything else `internal`, each naming the database.
  template <typename F>
  void guarded(F f) {
    try {
      f();
    } catch (const pqxx::broken_connection& e) {
      throw unavailable(where_ + ": connection to PostgreSQL lost: " + trimmed(e.what()));
    } catch (const pqxx::transaction_rollback& e) {
      throw unavailable(where_ + ": transaction rolled back by PostgreSQL (try again): " + trimmed(e.what()));
    } catch (const pqxx::sql_error& e) {
      if (e.sqlstate() == "55P03") {
        throw unavailable(where_ + ": gave up waiting 10 s for a lock another writer holds: " + trimmed(e.what()));
      }
      throw internal_error(where_ + ": " + trimmed(e.what()) + " (SQLSTATE " + e.sqlstate() + ")");
    } catch (const pqxx::in_doubt_error& e) {
      throw unavailable(where_ +
                        ": connection lost during commit; the change may or may not have landed: " + trimmed(e.what()));
    } catch (const pqxx::failure& e) {
      throw internal_error(where_ + ": " + trimmed(e.what()));
    } catch (const pqxx::usage_error& e) {
      throw internal_error(where_ + ": " + trimmed(e.what()));
    }
  }

  std::string where_;
  std::unique_ptr<pqxx::connection> conn_;
  std::unique_ptr<pqxx::work> tx_;
};

AdvisoryLock::~AdvisoryLock() {
  try {
    db_.execute("SELECT pg_advisory_unlock(?)", {key_});
  } catch (...) {
    // A lost connection releases its session's locks on the server.
  }
}

}  // namespace

std::unique_ptr<Database> open_postgres(const RegistryLocation& location, bool create) {
  auto db = std::make_unique<PostgresDatabase>(location);
  if (create) {
    db->create_schema();
  } else if (!db->has_schema()) {
    throw not_found(location.display + ": no registry in this database (run `bulwark registry init`)");
  } else {
    db->create_schema();  // tables added since the registry was made (IF NOT EXISTS: the rest untouched)
  }
  return db;
}

}  // namespace bulwark::registry::detail
