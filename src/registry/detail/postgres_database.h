// registry/detail/postgres_database.h — the PostgreSQL backend of registry::Database (libpqxx).
#pragma once

#include <memory>

#include "registry/db.h"

namespace bulwark::registry::detail {

// Connects (libpq's connect_timeout; unavailable when it fails), sets a 10 s lock_timeout, and
// with `create` makes the schema (idempotent, serialised by an advisory lock); otherwise a
// database without the registry's tables throws not_found naming it.
std::unique_ptr<Database> open_postgres(const RegistryLocation& location, bool create);

}  // namespace bulwark::registry::detail
