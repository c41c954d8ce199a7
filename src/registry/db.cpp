#include "registry/db.h"

#include <pwd.h>
#include <unistd.h>

#include <charconv>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <limits>

#include "core/error.h"
#include "registry/detail/postgres_database.h"
#include "registry/detail/sqlite_database.h"

namespace bulwark::registry {
namespace {

const Value& cell(const std::vector<Value>& cells, size_t column) {
  if (column >= cells.size()) {
    throw internal_error("registry database: column " + std::to_string(column) + " of a row with " +
                         std::to_string(cells.size()));
  }
  return cells[column];
}

[[noreturn]] void bad_cell(size_t column, const char* wanted) {
  throw internal_error("registry database: column " + std::to_string(column) + " is not " + wanted);
}

}  // namespace

bool Row::is_null(size_t column) const { return std::holds_alternative<std::nullptr_t>(cell(cells_, column)); }

std::string Row::text(size_t column) const {
  const Value& v = cell(cells_, column);
  if (const auto* s = std::get_if<std::string>(&v)) return *s;
  if (const auto* i = std::get_if<int64_t>(&v)) return std::to_string(*i);
  if (const auto* d = std::get_if<double>(&v)) {
    char buf[32];
    const auto r = std::to_chars(buf, buf + sizeof buf, *d);
    return std::string(buf, r.ptr);
  }
  bad_cell(column, "text (it is NULL)");
}

int64_t Row::int64(size_t column) const {
  const Value& v = cell(cells_, column);
  if (const auto* i = std::get_if<int64_t>(&v)) return *i;
  if (const auto* s = std::get_if<std::string>(&v)) {
    int64_t out = 0;
    const auto r = std::from_chars(s->data(), s->data() + s->size(), out);
    if (r.ec == std::errc() && r.ptr == s->data() + s->size()) return out;
  }
  bad_cell(column, "an integer");
}

double Row::real(size_t column) const {
  const Value& v = cell(cells_, column);
  if (const auto* d = std::get_if<double>(&v)) return *d;
  if (const auto* i = std::get_if<int64_t>(&v)) return static_cast<double>(*i);
  if (const auto* s = std::get_if<std::string>(&v)) {
    double out = 0;
    const auto r = std::from_chars(s->data(), s->data() + s->size(), out);
    if (r.ec == std::errc() && r.ptr == s->data() + s->size()) return out;
    // PostgreSQL spells the non-finite values out.
    if (*s == "NaN") return std::numeric_limits<double>::quiet_NaN();
    if (*s == "Infinity") return std::numeric_limits<double>::infinity();
    if (*s == "-Infinity") return -std::numeric_limits<double>::infinity();
  }
  bad_cell(column, "a number");
}

Database::operator SQLite::Database&() {
  SQLite::Database* handle = sqlite_handle();
  if (handle == nullptr) {
    throw invalid_argument(std::string("this registry is on ") + to_string(backend()) + ", not SQLite");
  }
  return *handle;
}

std::unique_ptr<Database> open_database(const RegistryLocation& location, bool create, bool read_only) {
  if (location.backend == Backend::kPostgres) return detail::open_postgres(location, create);
  if (read_only) return detail::open_sqlite_read_only(location.dir + "/registry.db");
  return detail::open_sqlite(location.dir + "/registry.db", create);
}

std::string utc_timestamp() {
  const auto now = std::chrono::system_clock::now();
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count();
  const std::time_t seconds = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  gmtime_r(&seconds, &tm);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<int>(ms % 1000));
  return buf;
}

std::string local_actor() {
  const struct passwd* pw = ::getpwuid(::geteuid());
  return std::string("local:") + (pw != nullptr ? pw->pw_name : std::to_string(::geteuid()));
}

}  // namespace bulwark::registry
