#include "cli/run_record.h"

#include <filesystem>

#include "core/digest.h"
#include "registry/registry.h"

namespace bulwark::cli {
namespace {

using nlohmann::json;

void walk(const json& j, const std::string& key, int64_t step,
          const std::function<void(const std::string&, double, int64_t)>& emit) {
  if (j.is_number() || j.is_boolean()) {
    if (!key.empty() && key.size() <= 250) emit(key, j.is_boolean() ? (j.get<bool>() ? 1 : 0) : j.get<double>(), step);
    return;
  }
  const auto child = [&key](const std::string& k) { return key.empty() ? k : key + "." + k; };
  if (j.is_object()) {
    for (const auto& [k, v] : j.items()) walk(v, child(k), step, emit);
    return;
  }
  if (!j.is_array()) return;
  for (size_t i = 0; i < j.size(); ++i) {
    const auto& e = j[i];
    if (e.is_object() && e.contains("epoch") && e["epoch"].is_number_integer()) {
      walk(e, key, e["epoch"].get<int64_t>(), emit);
    } else {
      walk(e, child(std::to_string(i)), step, emit);
    }
  }
}

// The command's options as given, or their defaults: the run's params.
json params_of(const CLI::App& cmd) {
  json p = json::object();
  for (const auto* opt : cmd.get_options()) {
    const std::string name = opt->get_single_name();
    if (name.empty() || name == "help") continue;
    std::string value;
    for (const auto& r : opt->results()) value += (value.empty() ? "" : ",") + r;
    if (value.empty()) value = opt->get_default_str();
    if (!value.empty()) p[name] = value;
  }
  return p;
}

}  // namespace

void add_registry_option(CLI::App* cmd, std::string& dir) {
  cmd->add_option("--registry", dir, "Record this run (params, metrics, artifact) in this registry");
}

void for_each_metric(const json& result, const std::function<void(const std::string&, double, int64_t)>& emit) {
  walk(result, "", 0, emit);
}

CommandRun::CommandRun(const std::string& registry_dir, const std::string& kind, const CLI::App& cmd,
                       const GlobalOptions& g) {
  if (registry_dir.empty()) return;
  registry_ = std::make_unique<registry::Registry>(registry_dir, registry::local_actor());
  auto params = params_of(cmd);
  params["seed"] = std::to_string(g.seed);
  run_ = std::make_unique<registry::RunRecorder>(*registry_, kind, params, g.command_line);
  // The model a run measured, by content: `bulwark report threat` finds a registry version's runs by
  // this hash, whatever path the file was given by (a path can be re-used for another model).
  const auto* model = cmd.get_option_no_throw("--model");
  if (model && model->count() == 1 && std::filesystem::is_regular_file(model->results().front())) {
    run_->set_tag("model_sha256", sha256_file_hex(model->results().front()));
  }
}

CommandRun::~CommandRun() = default;  // an unfinished RunRecorder records FAILED

void CommandRun::set_tag(const std::string& key, const std::string& value) {
  if (run_) run_->set_tag(key, value);
}

void CommandRun::finish(const json& result, const std::string& artifact) {
  if (!run_) return;
  for_each_metric(result, [this](const std::string& k, double v, int64_t step) { run_->log_metric(k, v, step); });
  run_->finish(artifact);
  std::cerr << "run " << run_->run_id() << " recorded in " << registry_->dir() << '\n';
}

}  // namespace bulwark::cli
