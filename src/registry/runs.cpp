#include "registry/runs.h"

#include <random>

#include "core/digest.h"
#include "core/error.h"
#include "registry/db.h"
#include "registry/store.h"

namespace bulwark::registry {
namespace {

using nlohmann::json;

std::string new_run_id() { return random_hex(16); }  // 32 hex characters, like MLflow's

std::string as_text(const json& v) { return v.is_string() ? v.get<std::string>() : v.dump(); }

RunRecord read_run(const Row& q) {
  RunRecord r;
  r.run_id = q.text(0);
  r.run_name = q.text(1);
  r.kind = q.text(2);
  r.status = q.text(3);
  r.start_time = q.text(4);
  r.end_time = q.is_null(5) ? "" : q.text(5);
  r.user = q.text(6);
  r.command = q.text(7);
  r.artifact = q.is_null(8) ? "" : q.text(8);
  r.artifact_sha256 = q.is_null(9) ? "" : q.text(9);
  return r;
}

// "user" quoted: a reserved word in PostgreSQL.
constexpr const char* kRunColumns =
    "SELECT run_id, run_name, kind, status, start_time, end_time, \"user\", command, artifact, artifact_sha256 "
    "FROM runs ";

}  // namespace

RunRecorder::RunRecorder(Registry& registry, const std::string& kind, const json& params, const std::string& command)
    : registry_(registry), run_id_(new_run_id()) {
  if (!params.is_object()) throw invalid_argument("run params must be a JSON object");
  auto& db = registry_.db();
  WriteTransaction tx(db);
  db.execute("INSERT INTO runs(run_id, run_name, kind, status, start_time, \"user\", command) "
             "VALUES(?, ?, ?, 'RUNNING', ?, ?, ?)",
             {run_id_, kind + "-" + run_id_.substr(0, 8), kind, utc_timestamp(), registry_.actor(), command});
  for (const auto& [key, value] : params.items()) {
    db.execute("INSERT INTO run_params(run_id, key, value) VALUES(?, ?, ?)", {run_id_, key, as_text(value)});
  }
  tx.commit();
}

RunRecorder::~RunRecorder() {
  if (ended_) return;
  try {
    end("FAILED", "");
  } catch (...) {
    // Destructors must not throw; the run stays RUNNING in the record, which says the same.
  }
}

void RunRecorder::log_metric(const std::string& key, double value, int64_t step) {
  registry_.db().execute("INSERT INTO run_metrics(run_id, key, value, step, timestamp) VALUES(?, ?, ?, ?, ?)",
                         {run_id_, key, value, step, utc_timestamp()});
}

void RunRecorder::set_tag(const std::string& key, const std::string& value) {
  registry_.db().execute("INSERT INTO run_tags(run_id, key, value) VALUES(?, ?, ?) "
                         "ON CONFLICT(run_id, key) DO UPDATE SET value = excluded.value",
                         {run_id_, key, value});
}

void RunRecorder::finish(const std::string& artifact) { end("FINISHED", artifact); }

void RunRecorder::end(const std::string& status, const std::string& artifact) {
  ended_ = true;
  const Value no_value = nullptr;
  registry_.db().execute("UPDATE runs SET status = ?, end_time = ?, artifact = ?, artifact_sha256 = ? WHERE run_id = ?",
                         {status, utc_timestamp(), artifact.empty() ? no_value : Value(artifact),
                          artifact.empty() ? no_value : Value(sha256_file_hex(artifact)), run_id_});
}

json RunRecord::to_json() const {
  json m = json::array();
  for (const auto& x : metrics) m.push_back({{"key", x.key}, {"value", x.value}, {"step", x.step}, {"timestamp", x.timestamp}});
  return {{"info", {{"run_id", run_id}, {"run_name", run_name}, {"status", status}, {"start_time", start_time},
                    {"end_time", end_time}, {"user_id", user}, {"artifact_uri", artifact},
                    {"artifact_sha256", artifact_sha256}}},
          {"data", {{"params", params}, {"metrics", m}, {"tags", tags}}},
          {"kind", kind},
          {"command", command}};
}

std::vector<RunRecord> list_runs(Registry& registry, const std::string& kind, int64_t limit) {
  std::vector<RunRecord> out;
  const std::string sql = std::string(kRunColumns) + "WHERE (? = '' OR kind = ?) ORDER BY start_time DESC LIMIT ?";
  for (const auto& r : registry.db().query(sql, {kind, kind, limit})) {
    out.push_back(read_run(r));
  }
  return out;
}

RunRecord show_run(Registry& registry, const std::string& prefix) {
  if (prefix.empty() || prefix.find_first_not_of("0123456789abcdef") != std::string::npos) {
    throw invalid_argument("run id '" + prefix + "' must be hex (see `bulwark runs list`)");
  }
  auto& db = registry.db();
  std::vector<RunRecord> found;
  // The prefix is hex (checked above): no LIKE wildcards in it.
  for (const auto& r : db.query(std::string(kRunColumns) + "WHERE run_id LIKE ? LIMIT 2", {prefix + "%"})) {
    found.push_back(read_run(r));
  }
  if (found.empty()) throw not_found("no run with id " + prefix);
  if (found.size() > 1) throw invalid_argument("run id prefix " + prefix + " is ambiguous: give more characters");
  auto r = found.front();
  for (const auto& p : db.query("SELECT key, value FROM run_params WHERE run_id = ? ORDER BY key", {r.run_id})) {
    r.params[p.text(0)] = p.text(1);
  }
  for (const auto& t : db.query("SELECT key, value FROM run_tags WHERE run_id = ? ORDER BY key", {r.run_id})) {
    r.tags[t.text(0)] = t.text(1);
  }
  // rowid: insertion order (SQLite's implicit row id; a BIGSERIAL column on PostgreSQL).
  for (const auto& m : db.query("SELECT key, value, step, timestamp FROM run_metrics WHERE run_id = ? ORDER BY rowid",
                                {r.run_id})) {
    r.metrics.push_back({m.text(0), m.real(1), m.int64(2), m.text(3)});
  }
  return r;
}

}  // namespace bulwark::registry
