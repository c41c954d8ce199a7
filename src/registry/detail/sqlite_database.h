// registry/detail/sqlite_database.h — the SQLite backend of registry::Database (SQLiteCpp).
#pragma once

#include <memory>
#include <string>

#include "registry/db.h"

namespace bulwark::registry::detail {

// WAL journal, synchronous=FULL (a committed change survives power loss), a 10 s busy timeout,
// foreign keys on. `create` makes the file and the schema; otherwise a missing file throws
// not_found naming it.
std::unique_ptr<Database> open_sqlite(const std::string& path, bool create);

// The same database, never written: a registry on a read-only mount. Opened `mode=ro` (which
// reads a WAL a writer elsewhere keeps, through its -shm) or, where SQLite cannot (no writer: no
// -shm, and none can be made on the read-only mount), `immutable=1`: a snapshot that no process
// changes. A write through it fails (SQLITE_READONLY).
std::unique_ptr<Database> open_sqlite_read_only(const std::string& path);

}  // namespace bulwark::registry::detail
