// cli/run_record.h — `--registry DIR` on train, harden, attack and detect evaluate: the command's
// run recorded in the registry (MLflow-shaped: params = the command's options, metrics = every
// number of its result, per epoch where the result has epochs, the artifact it wrote).
#pragma once

#include <memory>
#include <string>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "cli/common.h"

namespace bulwark::registry {
class Registry;
class RunRecorder;
}  // namespace bulwark::registry

namespace bulwark::cli {

void add_registry_option(CLI::App* cmd, std::string& dir);

// RUNNING from construction; FINISHED by finish(), FAILED when destroyed unfinished (the command
// threw). A no-op when `registry_dir` is empty.
class CommandRun {
 public:
  CommandRun(const std::string& registry_dir, const std::string& kind, const CLI::App& cmd, const GlobalOptions& g);
  ~CommandRun();
  void finish(const nlohmann::json& result, const std::string& artifact = "");
  // A tag on the run (MLflow's tags): what others look the run up by. A no-op without a registry.
  void set_tag(const std::string& key, const std::string& value);

 private:
  std::unique_ptr<registry::Registry> registry_;
  std::unique_ptr<registry::RunRecorder> run_;
};

// Numbers in `result` as metric (key, value, step): keys are '.'-joined paths; an array of objects
// with an "epoch" field gives one step per epoch instead of an index in the key.
void for_each_metric(const nlohmann::json& result,
                     const std::function<void(const std::string&, double, int64_t)>& emit);

}  // namespace bulwark::cli
