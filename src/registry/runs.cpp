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

RunRecord read_run(SQLite::Statement& q) {
  RunRecord r;
  r.run_id = q.getColumn(0).getString();
  r.run_name = q.getColumn(1).getString();
  r.kind = q.getColumn(2).getString();
  r.status = q.getColumn(3).getString();
  r.start_time = q.getColumn(4).getString();
  r.end_time = q.getColumn(5).isNull() ? "" : q.getColumn(5).getString();
  r.user = q.getColumn(6).getString();
  r.command = q.getColumn(7).getString();
  r.artifact = q.getColumn(8).isNull() ? "" : q.getColumn(8).getString();
  r.artifact_sha256 = q.getColumn(9).isNull() ? "" : q.getColumn(9).getString();
  return r;
}

constexpr const char* kRunColumns =
    "SELECT run_id, run_name, kind, status, start_time, end_time, user, command, artifact, artifact_sha256 FROM runs ";

}  // namespace

RunRecorder::RunRecorder(Registry& registry, const std::string& kind, const json& params, const std::string& command)
    : registry_(registry), run_id_(new_run_id()) {
  if (!params.is_object()) throw invalid_argument("run params must be a JSON object");
  auto& db = registry_.db();
  WriteTransaction tx(db);
  SQLite::Statement q(db, "INSERT INTO runs(run_id, run_name, kind, status, start_time, user, command) "
                          "VALUES(?, ?, ?, 'RUNNING', ?, ?, ?)");
  q.bind(1, run_id_);
  q.bind(2, kind + "-" + run_id_.substr(0, 8));
  q.bind(3, kind);
  q.bind(4, utc_timestamp());
  q.bind(5, registry_.actor());
  q.bind(6, command);
  q.exec();
  for (const auto& [key, value] : params.items()) {
    SQLite::Statement p(db, "INSERT INTO run_params(run_id, key, value) VALUES(?, ?, ?)");
    p.bind(1, run_id_);
    p.bind(2, key);
    p.bind(3, as_text(value));
    p.exec();
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
  SQLite::Statement q(registry_.db(), "INSERT INTO run_metrics(run_id, key, value, step, timestamp) VALUES(?, ?, ?, ?, ?)");
  q.bind(1, run_id_);
  q.bind(2, key);
  q.bind(3, value);
  q.bind(4, static_cast<int64_t>(step));
  q.bind(5, utc_timestamp());
  q.exec();
}

void RunRecorder::set_tag(const std::string& key, const std::string& value) {
  SQLite::Statement q(registry_.db(), "INSERT OR REPLACE INTO run_tags(run_id, key, value) VALUES(?, ?, ?)");
  q.bind(1, run_id_);
  q.bind(2, key);
  q.bind(3, value);
  q.exec();
}

void RunRecorder::finish(const std::string& artifact) { end("FINISHED", artifact); }

void RunRecorder::end(const std::string& status, const std::string& artifact) {
  ended_ = true;
  SQLite::Statement q(registry_.db(), "UPDATE runs SET status = ?, end_time = ?, artifact = ?, artifact_sha256 = ? "
                                      "WHERE run_id = ?");
  q.bind(1, status);
  q.bind(2, utc_timestamp());
  if (artifact.empty()) {
    q.bind(3);
    q.bind(4);
  } else {
    q.bind(3, artifact);
    q.bind(4, sha256_file_hex(artifact));
  }
  q.bind(5, run_id_);
  q.exec();
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
  SQLite::Statement q(registry.db(), std::string(kRunColumns) + "WHERE (? = '' OR kind = ?) ORDER BY start_time DESC LIMIT ?");
  q.bind(1, kind);
  q.bind(2, kind);
  q.bind(3, static_cast<int64_t>(limit));
  std::vector<RunRecord> out;
  while (q.executeStep()) out.push_back(read_run(q));
  return out;
}

RunRecord show_run(Registry& registry, const std::string& prefix) {
  if (prefix.empty() || prefix.find_first_not_of("0123456789abcdef") != std::string::npos) {
    throw invalid_argument("run id '" + prefix + "' must be hex (see `bulwark runs list`)");
  }
  auto& db = registry.db();
  SQLite::Statement q(db, std::string(kRunColumns) + "WHERE run_id LIKE ? || '%' LIMIT 2");
  q.bind(1, prefix);
  std::vector<RunRecord> found;
  while (q.executeStep()) found.push_back(read_run(q));
  if (found.empty()) throw not_found("no run with id " + prefix);
  if (found.size() > 1) throw invalid_argument("run id prefix " + prefix + " is ambiguous: give more characters");
  auto r = found.front();
  SQLite::Statement p(db, "SELECT key, value FROM run_params WHERE run_id = ? ORDER BY key");
  p.bind(1, r.run_id);
  while (p.executeStep()) r.params[p.getColumn(0).getString()] = p.getColumn(1).getString();
  SQLite::Statement t(db, "SELECT key, value FROM run_tags WHERE run_id = ? ORDER BY key");
  t.bind(1, r.run_id);
  while (t.executeStep()) r.tags[t.getColumn(0).getString()] = t.getColumn(1).getString();
  SQLite::Statement m(db, "SELECT key, value, step, timestamp FROM run_metrics WHERE run_id = ? ORDER BY rowid");
  m.bind(1, r.run_id);
  while (m.executeStep()) {
    r.metrics.push_back({m.getColumn(0).getString(), m.getColumn(1).getDouble(), m.getColumn(2).getInt64(),
                         m.getColumn(3).getString()});
  }
  return r;
}

}  // namespace bulwark::registry
