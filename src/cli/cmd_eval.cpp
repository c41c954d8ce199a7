// bulwark eval — clean accuracy, per-class accuracy and confusion matrix.
#include <cstdio>
#include <iostream>

#include "cli/common.h"
#include "cli/data_flags.h"
#include "core/error.h"
#include "core/files.h"
#include "core/progress.h"
#include "data/dataset.h"
#include "model/model.h"
#include "train/evaluate.h"

namespace bulwark::cli {
namespace {

struct EvalFlags {
  std::string model;
  DataFlags data;
  std::string split = "test";
  int64_t limit = 0;
  std::string predictions;  // CSV: index,label,predicted
};

void print_confusion(const train::EvalResult& r) {
  std::cout << "\nconfusion matrix (rows: true class, columns: predicted)\n     ";
  for (size_t c = 0; c < r.confusion.size(); ++c) std::printf("%6zu", c);
  std::printf("\n");
  for (size_t t = 0; t < r.confusion.size(); ++t) {
    std::printf("%5zu", t);
    for (int64_t v : r.confusion[t]) std::printf("%6lld", static_cast<long long>(v));
    std::printf("\n");
  }
  std::fflush(stdout);
}

void run_eval(const EvalFlags& f, const GlobalOptions& g) {
  apply_threads(g);
  if (f.split != "test" && f.split != "train") {
    throw invalid_argument("--split must be 'test' or 'train', got '" + f.split + "'");
  }
  const model::Model m = model::Model::load(f.model);
  data::Dataset d = load_for_model(f.data, f.split == "test" ? data::Split::kTest : data::Split::kTrain, m);
  if (f.limit > 0) d = d.head(f.limit, "--limit");
  const train::EvalResult r = train::evaluate(m, d);
  const auto& names = m.spec().class_names;
  std::vector<std::pair<std::string, std::string>> rows = {
      {"model", f.model + " (" + m.spec().arch + ")"},
      {"data", d.name + " " + d.split + " (" + with_commas(r.n) + " images)"},
      {"accuracy", percent(r.accuracy()) + "  (" + with_commas(r.correct) + "/" + with_commas(r.n) + ")"},
      {"time", format_duration(r.seconds)}};
  for (size_t c = 0; c < r.per_class_accuracy.size(); ++c) {
    rows.push_back({"  " + std::to_string(c) + " " + (c < names.size() ? names[c] : ""),
                    percent(r.per_class_accuracy[c]) + "  (" + with_commas(r.per_class_count[c]) + ")"});
  }
  if (!f.predictions.empty()) {
    std::string csv = "index,label,predicted\n";
    const auto* y = d.labels.data_ptr<int64_t>();
    for (size_t i = 0; i < r.predictions.size(); ++i) {
      csv += std::to_string(i) + "," + std::to_string(y[i]) + "," + std::to_string(r.predictions[i]) + "\n";
    }
    atomic_write_file(f.predictions, csv);
  }
  nlohmann::json j = r.to_json(names);
  j["model"] = f.model;
  j["dataset"] = d.name;
  j["split"] = d.split;
  print_result(g, j, rows);
  if (!g.json) print_confusion(r);
}

}  // namespace

void register_eval(CLI::App& app, GlobalOptions& g) {
  auto flags = std::make_shared<EvalFlags>();
  auto* cmd = app.add_subcommand("eval", "Clean accuracy, per-class accuracy and confusion matrix");
  cmd->add_option("--model", flags->model, "Model file (.pt)")->required();
  add_data_options(cmd, flags->data);
  cmd->add_option("--split", flags->split, "test or train")->capture_default_str();
  cmd->add_option("--limit", flags->limit, "Use only the first N images")->check(CLI::PositiveNumber);
  cmd->add_option("--predictions", flags->predictions,
                  "Write each image's label and prediction (CSV: index,label,predicted; the dataset's order)");
  cmd->callback([flags, &g] { run_eval(*flags, g); });
}

}  // namespace bulwark::cli
