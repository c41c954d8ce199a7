// registry/db.h — the registry's database, behind one small SQL interface with two backends:
// SQLite (a file in the registry directory, through SQLiteCpp) and PostgreSQL (through libpqxx).
// Both hold the same tables; the registry writes its SQL once, with `?` placeholders.
//
// Every change the registry makes is one write transaction, and an audit entry is written in the
// same transaction as the change it records: both land, or neither does. What keeps concurrent
// writers consistent differs, and the registry states what it needs through lock_rows and
// lock_table:
//   SQLite      one IMMEDIATE transaction at a time (the database's write lock, taken up front;
//               writers queue on a 10 s busy timeout), so lock_rows and lock_table have nothing
//               left to do.
//   PostgreSQL  READ COMMITTED transactions running side by side; lock_rows is SELECT ... FOR
//               UPDATE, lock_table is LOCK TABLE ... IN EXCLUSIVE MODE (readers go on; writers of
//               that table wait). Waits give up after 10 s (lock_timeout).
#pragma once

// SQLiteCpp stays visible here for code that still edits a SQLite registry's rows directly
// (`SQLite::Statement q(registry.db(), ...)`, through the conversion below).
#include <SQLiteCpp/Database.h>
#include <SQLiteCpp/Statement.h>

#include <cstdint>
#include <memory>
#include <string>
#include <variant>
#include <vector>

#include "registry/location.h"

namespace bulwark::registry {

// A bound parameter or a result cell. PostgreSQL results arrive as text; the getters convert.
using Value = std::variant<std::nullptr_t, int64_t, double, std::string>;
using Params = std::vector<Value>;

class Row {
 public:
  explicit Row(std::vector<Value> cells) : cells_(std::move(cells)) {}
  size_t size() const { return cells_.size(); }
  bool is_null(size_t column) const;
  // Each throws internal_error naming the column when the cell is NULL or does not convert.
  std::string text(size_t column) const;
  int64_t int64(size_t column) const;
  double real(size_t column) const;

 private:
  std::vector<Value> cells_;
};

// Held by lock_checkpoints() until destroyed.
class SessionLock {
 public:
  virtual ~SessionLock() = default;
};

// Thread-safety: one connection; one thread at a time.
class Database {
 public:
  virtual ~Database() = default;
  virtual Backend backend() const = 0;

  // One or more statements without parameters (the schema; tests that edit rows).
  virtual void exec(const std::string& sql) = 0;
  // One statement, `?` placeholders bound in order; returns the number of rows it changed.
  virtual int64_t execute(const std::string& sql, const Params& params = {}) = 0;
  // One statement; all of its rows (the registry's results are small).
  virtual std::vector<Row> query(const std::string& sql, const Params& params = {}) = 0;

  // A write transaction (see the file comment); use WriteTransaction rather than these.
  virtual void begin_write() = 0;
  virtual void commit() = 0;
  virtual void rollback() noexcept = 0;
  // Inside a write transaction: the rows `select` returns stay locked until it ends.
  virtual void lock_rows(const std::string& select, const Params& params) = 0;
  // Inside a write transaction: no other transaction writes `table` until it ends.
  virtual void lock_table(const std::string& table) = 0;
  // Outside a transaction: while the returned lock lives, no other handle on this database holds
  // one. The audit log writes and reads its checkpoint under it, so checkpoints from different
  // machines are written in log order. Null on SQLite (one machine; the file's own rename order).
  virtual std::unique_ptr<SessionLock> lock_checkpoints() = 0;

  // For code written against the SQLite-only registry; throws invalid_argument on PostgreSQL.
  operator SQLite::Database&();  // NOLINT(google-explicit-constructor)

 protected:
  virtual SQLite::Database* sqlite_handle() { return nullptr; }
};

// Opens the registry's database: `create` makes it (SQLite: the file) and the schema; otherwise a
// database without the registry's tables throws not_found naming it. PostgreSQL that cannot be
// reached throws unavailable.
// `read_only`: SQLite opened without writing (registry/detail/sqlite_database.h); PostgreSQL as usual.
std::unique_ptr<Database> open_database(const RegistryLocation& location, bool create, bool read_only = false);

// commit() or it rolls back when it goes out of scope.
class WriteTransaction {
 public:
  explicit WriteTransaction(Database& db) : db_(db) { db_.begin_write(); }
  ~WriteTransaction() {
    if (!done_) db_.rollback();
  }
  WriteTransaction(const WriteTransaction&) = delete;
  WriteTransaction& operator=(const WriteTransaction&) = delete;
  void commit() {
    db_.commit();
    done_ = true;
  }

 private:
  Database& db_;
  bool done_ = false;
};

// "2026-11-21T18:50:00.123Z": UTC, millisecond resolution; sorts as text in time order.
std::string utc_timestamp();
// The local user running this process, as "local:<name>" (the actor of CLI actions).
std::string local_actor();

}  // namespace bulwark::registry
