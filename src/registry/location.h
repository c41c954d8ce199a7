// registry/location.h — where a registry lives, from the one `--registry` value every command takes:
// a directory (SQLite: registry.db, objects/, trust/ and the log key in it), or a PostgreSQL URL
// whose `dir` parameter names the directory the database's users share for everything that is
// not rows: the artifact objects, the trust list, the audit log's key and its checkpoint.
//
//   bulwark-registry
//   postgresql://bulwark@db.internal:5432/registry?dir=/mnt/registry&sslmode=require
//
// One string rather than two flags so that everything that already passes a registry along
// (serve, guard, run records, the loop) works with either backend unchanged.
#pragma once

#include <string>

namespace bulwark::registry {

enum class Backend { kSqlite, kPostgres };
const char* to_string(Backend backend);

struct RegistryLocation {
  Backend backend = Backend::kSqlite;
  // The registry directory (SQLite) or the shared directory (PostgreSQL's `dir`, percent-decoded).
  std::string dir;
  // PostgreSQL only: the URL as libpq takes it (our `dir` parameter removed, a 10 s connect_timeout
  // added unless one is given).
  std::string conninfo;
  // For messages and the audit log: the value as given, with a password in it replaced by "***".
  std::string display;
};

// Throws invalid_argument naming what is wrong: an empty value, a PostgreSQL URL without `dir`.
RegistryLocation parse_location(const std::string& text);

}  // namespace bulwark::registry
