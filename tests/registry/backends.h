// The registry tests run once per backend: SQLite (a directory) and PostgreSQL (a throwaway server
// this test binary starts: initdb into a temp dir, postgres on a free loopback port, trust
// authentication, stopped when the binary exits or dies). A test written as
//
//   class Foo : public test::BackendTest {};
//   TEST_P(Foo, Bar) { auto reg = test::new_location(GetParam(), tmp); ... }
//   BULWARK_FOR_EACH_BACKEND(Foo);
//
// runs as Backends/Foo.Bar/sqlite and Backends/Foo.Bar/postgresql. The server starts on the first
// PostgreSQL test; without PostgreSQL's binaries those tests fail with what to install, or are
// skipped when BULWARK_TEST_POSTGRES=skip.
#pragma once

#include <gtest/gtest.h>

#include <ostream>
#include <string>

#include "registry/location.h"
#include "test_util.h"

namespace bulwark::registry::test {

// Where a test's registry lives: `location` is what --registry takes, `dir` the directory holding
// objects/, trust/, the log key and the checkpoint (the same string for SQLite).
struct Location {
  std::string location;
  std::string dir;
};

// A new, not yet initialised registry location: <tmp>/<name> (SQLite), or a new empty database on
// the test server with <tmp>/<name> as its directory (PostgreSQL).
Location new_location(Backend backend, const bulwark::testing::TempDir& tmp, const std::string& name = "reg");
// A copy of an initialised registry (directory and database) at <tmp>/<name>; nothing may have
// the source open.
Location copy_location(Backend backend, const Location& from, const bulwark::testing::TempDir& tmp,
                       const std::string& name);
// Every row of every registry table, sorted, as text, plus the SQLite file's SHA-256: equal before
// and after means nothing was written.
std::string database_fingerprint(const Location& where, Backend backend);

// A shell command that runs `sql` (no single quotes in it) on the registry's database with the
// backend's own client, sqlite3 or psql: tampering from outside Bulwark.
std::string sql_shell_command(const Location& where, Backend backend, const std::string& sql);

// Starts the test server if it is not running; fails (or skips) the current test when it cannot.
void require_backend(Backend backend);

class BackendTest : public ::testing::TestWithParam<Backend> {
 protected:
  void SetUp() override { require_backend(GetParam()); }
  Backend backend() const { return GetParam(); }
};

std::string backend_name(const ::testing::TestParamInfo<Backend>& info);

}  // namespace bulwark::registry::test

namespace bulwark::registry {
// GoogleTest prints the parameter by this name ("sqlite", "postgresql").
inline void PrintTo(Backend backend, std::ostream* out) { *out << to_string(backend); }
}  // namespace bulwark::registry

#define BULWARK_FOR_EACH_BACKEND(suite)                                                                  \
  INSTANTIATE_TEST_SUITE_P(                                                                              \
      Backends, suite,                                                                                   \
      ::testing::Values(::bulwark::registry::Backend::kSqlite, ::bulwark::registry::Backend::kPostgres), \
      ::bulwark::registry::test::backend_name)
