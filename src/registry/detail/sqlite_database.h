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

}  // namespace bulwark::registry::detail
