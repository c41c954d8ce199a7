// registry/db.h — the registry's SQLite database (through SQLiteCpp): the settings every
// connection needs and the schema. Every change the registry makes is one IMMEDIATE transaction
// (the write lock taken up front, so concurrent writers queue on the busy timeout instead of
// failing at commit), and an audit entry is written in the same transaction as the change it
// records: both land, or neither does.
#pragma once

#include <SQLiteCpp/Database.h>
#include <SQLiteCpp/Statement.h>
#include <SQLiteCpp/Transaction.h>

#include <memory>
#include <string>

namespace bulwark::registry {

// WAL journal, synchronous=FULL (a committed change survives power loss), a 10 s busy timeout,
// foreign keys on. `create` makes the file and the schema; otherwise a missing file throws
// not_found naming it.
std::unique_ptr<SQLite::Database> open_database(const std::string& path, bool create);

// An IMMEDIATE transaction: commit() or it rolls back when it goes out of scope.
class WriteTransaction {
 public:
  explicit WriteTransaction(SQLite::Database& db) : tx_(db, SQLite::TransactionBehavior::IMMEDIATE) {}
  void commit() { tx_.commit(); }

 private:
  SQLite::Transaction tx_;
};

// "2026-11-21T18:50:00.123Z": UTC, millisecond resolution; sorts as text in time order.
std::string utc_timestamp();
// The local user running this process, as "local:<name>" (the actor of CLI actions).
std::string local_actor();

}  // namespace bulwark::registry
