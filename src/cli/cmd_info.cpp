// bulwark info — a model's spec and metadata.
#include "cli/common.h"
#include "model/model.h"

namespace bulwark::cli {
namespace {

std::string join(const std::vector<std::string>& v) {
  std::string out;
  for (const auto& s : v) out += (out.empty() ? "" : ", ") + s;
  return out;
}

void run_info(const std::string& path, const GlobalOptions& g) {
  const model::Model m = model::Model::load(path);
  const auto& s = m.spec();
  std::string shape;
  for (auto d : s.input_shape) shape += (shape.empty() ? "" : "x") + std::to_string(d);
  nlohmann::json j = s.to_json();
  j["path"] = path;
  j["parameters"] = m.parameter_count();
  j["has_features"] = m.has_features();
  std::vector<std::pair<std::string, std::string>> rows = {
      {"path", path},
      {"arch", s.arch},
      {"parameters", with_commas(m.parameter_count())},
      {"input", shape + " in [" + std::to_string(s.lo) + ", " + std::to_string(s.hi) + "]"},
      {"classes", std::to_string(s.num_classes()) + ": " + join(s.class_names)},
      {"features()", m.has_features() ? "yes" : "no"},
      {"dataset", s.dataset.empty() ? "-" : s.dataset},
      {"seed", std::to_string(s.seed)},
  };
  if (s.normalises()) {
    std::string mean, std;
    for (size_t i = 0; i < s.mean.size(); ++i) {
      mean += (i ? "," : "") + std::to_string(s.mean[i]);
      std += (i ? "," : "") + std::to_string(s.std[i]);
    }
    rows.push_back({"normalise", "(x - [" + mean + "]) / [" + std + "], applied by Bulwark"});
  }
  if (s.training.contains("test_accuracy")) {
    rows.push_back({"trained", percent(s.training["test_accuracy"].get<double>()) + " clean test accuracy, " +
                                   std::to_string(s.training["options"].value("epochs", 0)) + " epochs"});
  }
  if (!s.hardening.empty()) rows.push_back({"hardened", s.hardening.dump()});
  print_result(g, j, rows);
}

}  // namespace

void register_info(CLI::App& app, GlobalOptions& g) {
  auto path = std::make_shared<std::string>();
  auto* cmd = app.add_subcommand("info", "Show a model's spec and metadata");
  cmd->add_option("model", *path, "Model file (.pt)")->required();
  cmd->callback([path, &g] { run_info(*path, g); });
}

}  // namespace bulwark::cli
