// registry/runs.h — run records: what `train`, `harden`, `attack` and `detect evaluate` did, in the
// registry database, shaped like MLflow's tracking model (a run with params, metrics by key and
// step, tags, a status and an artifact) so an exporter can map it one to one.
//
// Thread-safety: a RunRecorder writes through its registry's connection; one thread at a time.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace bulwark::registry {

class Registry;

// One run, RUNNING from construction; FINISHED by finish(), FAILED if destroyed unfinished (an
// exception or a cancelled job). Each call is its own short transaction, so a killed process
// leaves the run's record up to its last metric, still RUNNING.
class RunRecorder {
 public:
  // `params` is a flat JSON object (values stored as text, as MLflow does).
  RunRecorder(Registry& registry, const std::string& kind, const nlohmann::json& params, const std::string& command);
  ~RunRecorder();
  RunRecorder(const RunRecorder&) = delete;
  RunRecorder& operator=(const RunRecorder&) = delete;

  void log_metric(const std::string& key, double value, int64_t step = 0);
  void set_tag(const std::string& key, const std::string& value);
  // `artifact` (optional) is a file the run produced; its SHA-256 is recorded with it.
  void finish(const std::string& artifact = "");
  const std::string& run_id() const { return run_id_; }

 private:
  void end(const std::string& status, const std::string& artifact);
  Registry& registry_;
  std::string run_id_;
  bool ended_ = false;
};

struct RunMetric {
  std::string key;
  double value = 0;
  int64_t step = 0;
  std::string timestamp;
};

struct RunRecord {
  std::string run_id, run_name, kind, status, start_time, end_time, user, command, artifact, artifact_sha256;
  nlohmann::json params = nlohmann::json::object();
  nlohmann::json tags = nlohmann::json::object();
  std::vector<RunMetric> metrics;
  nlohmann::json to_json() const;
};

// Newest first; `kind` filters when not empty. Metrics are left out of the list (see show_run).
std::vector<RunRecord> list_runs(Registry& registry, const std::string& kind, int64_t limit);
// Accepts a unique prefix of the id; throws not_found / invalid_argument (ambiguous).
RunRecord show_run(Registry& registry, const std::string& run_id_prefix);

}  // namespace bulwark::registry
