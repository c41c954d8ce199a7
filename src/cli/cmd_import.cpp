// bulwark import — a TorchScript file from PyTorch gets its spec (input shape, normalisation, value
// range, class names) written in, after a probe forward checks the shape and the class count. Every
// other command refuses an archive without one.
#include <sstream>

#include "cli/common.h"
#include "cli/data_flags.h"
#include "core/error.h"
#include "core/files.h"
#include "data/dataset.h"
#include "model/model.h"

namespace bulwark::cli {
namespace {

struct ImportFlags {
  std::string model;
  std::string input_shape;
  std::string mean;
  std::string std;
  std::string value_range = "0,1";
  std::string classes;  // a file, one name per line
  std::string feature_layer;
  DataFlags data;
  bool data_given = false;
  std::string out;
};

std::vector<std::string> read_class_file(const std::string& path) {
  if (!file_exists(path)) throw not_found("--classes " + path + ": no such file");
  std::istringstream lines(read_file(path));
  std::vector<std::string> names;
  for (std::string line; std::getline(lines, line);) {
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
    if (line.empty()) throw invalid_argument("--classes " + path + ": line " + std::to_string(names.size() + 1) + " is empty");
    if (line.size() > 256) throw invalid_argument("--classes " + path + ": a class name is longer than 256 bytes");
    names.push_back(line);
  }
  if (names.empty()) throw invalid_argument("--classes " + path + ": has no class names (one per line)");
  return names;
}

void run_import(const ImportFlags& f, const GlobalOptions& g) {
  if (f.out.empty()) throw invalid_argument("--out is required: where to write the model with its spec");
  if (!f.classes.empty() && f.data_given) throw invalid_argument("give --classes or --data, not both");
  if (f.mean.empty() != f.std.empty()) throw invalid_argument("--mean and --std go together");
  model::ModelSpec spec;
  spec.input_shape = model::parse_shape(f.input_shape, "--input-shape");
  if (!f.mean.empty()) {
    spec.mean = model::parse_floats(f.mean, "--mean");
    spec.std = model::parse_floats(f.std, "--std");
  }
  if (spec.normalises()) {
    const auto c = static_cast<size_t>(spec.input_shape[0]);
    if (spec.mean.size() != c || spec.std.size() != c) {
      throw invalid_argument("--mean and --std need one value per input channel (" + std::to_string(c) + "), got " +
                             std::to_string(spec.mean.size()) + " and " + std::to_string(spec.std.size()));
    }
    for (const float s : spec.std) {
      if (!(s > 0)) throw invalid_argument("--std values must be positive");
    }
  }
  const auto range = model::parse_floats(f.value_range, "--value-range");
  if (range.size() != 2) throw invalid_argument("--value-range must be lo,hi (e.g. 0,1)");
  spec.lo = range[0];
  spec.hi = range[1];
  if (!f.classes.empty()) spec.class_names = read_class_file(f.classes);
  if (f.data_given) {
    data::LoadOptions o = load_options(f.data, nullptr);
    o.shape = spec.input_shape;
    const auto d = data::load_dataset(f.data.data, data::Split::kTest, o);
    spec.class_names = d.class_names;
    spec.dataset = d.name;
  }
  if (!f.feature_layer.empty()) {
    model::check_feature_layer(f.feature_layer, "--feature-layer");
    spec.feature_layer = f.feature_layer;
  }
  spec.arch = "torchscript";
  spec.seed = g.seed;
  const model::Model m = model::Model::import_torchscript(f.model, spec);
  m.save(f.out);
  const auto& s = m.spec();
  nlohmann::json j = s.to_json();
  j["source"] = f.model;
  j["model"] = f.out;
  std::string shape;
  for (auto d : s.input_shape) shape += (shape.empty() ? "" : "x") + std::to_string(d);
  print_result(g, j,
               {{"source", f.model},
                {"input", shape + " in [" + std::to_string(s.lo) + ", " + std::to_string(s.hi) + "]"},
                {"normalise", s.normalises() ? "by Bulwark, (x - mean) / std" : "none (the module takes pixels)"},
                {"features", !s.feature_layer.empty() ? "the output of " + s.feature_layer
                             : m.has_features()      ? "the input of the final linear layer"
                                                     : "none (mahalanobis needs --feature-layer)"},
                {"classes", std::to_string(s.num_classes()) + (f.classes.empty() && !f.data_given
                                                                   ? " (from the probe's logits, named 0..K-1)"
                                                                   : "")},
                {"saved", f.out}});
}

}  // namespace

void register_import(CLI::App& app, GlobalOptions& g) {
  auto f = std::make_shared<ImportFlags>();
  auto* cmd = app.add_subcommand("import", "Write the spec (input shape, normalisation, classes) into a TorchScript "
                                           "model from PyTorch, after a probe forward that checks it");
  cmd->add_option("model", f->model, "TorchScript file (torch.jit.script / trace, then .save)")->required();
  cmd->add_option("--input-shape", f->input_shape, "C,H,W the model takes, e.g. 3,32,32")->required();
  cmd->add_option("--mean", f->mean, "Per-channel mean Bulwark subtracts before the model (e.g. 0.4914,0.4822,0.4465)");
  cmd->add_option("--std", f->std, "Per-channel std Bulwark divides by (with --mean)");
  cmd->add_option("--value-range", f->value_range, "lo,hi of valid pixels (attacks' eps is in this space)")
      ->capture_default_str();
  cmd->add_option("--classes", f->classes, "File with one class name per line, in the model's output order");
  cmd->add_option("--feature-layer", f->feature_layer,
                  "Submodule whose output feature detectors (mahalanobis) read, e.g. layer4 or layer4.1 (default: "
                  "the input of the final linear layer)");
  auto* data = cmd->add_option("--data", f->data.data, "Take the class names from this dataset (docs/data.md)");
  cmd->add_option("--out", f->out, "Where to write the model with its spec")->required();
  cmd->callback([f, data, &g] {
    f->data_given = data->count() > 0;
    run_import(*f, g);
  });
}

}  // namespace bulwark::cli
