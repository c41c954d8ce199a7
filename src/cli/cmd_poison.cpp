// bulwark poison scan — is there a backdoor in a training set? Spectral signatures and activation
// clustering on the penultimate features of a model trained on it (poison/scan.h); optionally the
// model retrained without the suspects, by its own recipe, and a trigger's success before and after.
#include <fstream>
#include <iostream>

#include "cli/common.h"
#include "cli/data_flags.h"
#include "cli/run_record.h"
#include "core/error.h"
#include "core/files.h"
#include "core/progress.h"
#include "model/model.h"
#include "poison/poison.h"
#include "train/evaluate.h"

namespace bulwark::cli {
namespace {

struct PoisonFlags {
  std::string model;
  DataFlags data;
  int64_t limit = 0;  // 0: the rows the model's training record names, else all
  std::string method = "both";
  double spectral_threshold = poison::ScanOptions().spectral_threshold();
  double silhouette_threshold = poison::ScanOptions().silhouette_threshold();
  int64_t neighbours = poison::ScanOptions().neighbours();
  int64_t reference_rows = poison::ScanOptions().reference_rows();
  bool no_whiten = false;
  std::string out, suspects;
  bool retrain = false;
  int64_t trigger_target = -1, trigger_source = -1, trigger_size = 4;
  bool quiet = false;
  std::string registry;
};

void write_suspects(const std::string& path, const poison::ScanResult& r, const std::vector<std::string>& names) {
  std::string csv = "row,label,class,score,method\n";
  for (const auto& s : r.suspects) {
    csv += std::to_string(s.row) + "," + std::to_string(s.label) + ",\"" + names.at(static_cast<size_t>(s.label)) +
           "\"," + std::to_string(s.score) + "," + s.method + "\n";
  }
  atomic_write_file(path, csv);
}

int64_t rows_to_scan(const PoisonFlags& f, const model::Model& m, int64_t available) {
  if (f.limit > 0) return f.limit;
  const auto& t = m.spec().training;
  if (t.is_object() && t.contains("train_images") && t.contains("validation_images")) {
    return std::min(available, t.at("train_images").get<int64_t>() + t.at("validation_images").get<int64_t>());
  }
  return available;
}

void run_scan(const PoisonFlags& f, const CLI::App& cmd, const GlobalOptions& g) {
  apply_threads(g);
  const auto options = poison::ScanOptions()
                           .method(poison::parse_scan_method(f.method))
                           .spectral_threshold(f.spectral_threshold)
                           .silhouette_threshold(f.silhouette_threshold)
                           .neighbours(f.neighbours)
                           .reference_rows(f.reference_rows)
                           .whiten(!f.no_whiten)
                           .seed(g.seed)
                           .progress(!f.quiet);
  if (f.limit < 0) throw invalid_argument("--limit must be positive, got " + std::to_string(f.limit));
  if (f.trigger_size < 1 || f.trigger_size > 16) {
    throw invalid_argument("--trigger-size must be in [1, 16], got " + std::to_string(f.trigger_size));
  }
  if (f.trigger_target < 0 && (f.trigger_source >= 0)) {
    throw invalid_argument("--trigger-source needs --trigger-target");
  }
  std::optional<poison::BadNetsOptions> trigger;
  if (f.trigger_target >= 0) {
    trigger.emplace(f.trigger_target, 0.01);  // the rate is not used to measure success
    trigger->patch_size(f.trigger_size);
    if (f.trigger_source >= 0) trigger->mode(poison::BadNetsMode::kOneToOne).source(f.trigger_source);
  }
  CommandRun run(f.registry, "poison-scan", cmd, g);
  const model::Model m = model::Model::load(f.model);
  poison::require_features(m);  // before loading any data
  if (f.retrain) poison::recipe_options(m.spec(), g.seed, false);    // refuses a model without a recipe up front
  const data::Dataset all = load_for_model(f.data, data::Split::kTrain, m, !f.quiet);
  const data::Dataset train = all.head(rows_to_scan(f, m, all.size()));
  // The scan and the rows' digest read the whole selection at once.
  train.require_in_memory(parse_memory(f.data.max_memory), "bulwark poison scan", "--limit");
  const poison::ScanResult r = poison::scan(m, train, options);
  // The rows scanned, by content: the loop's gate (gate.require_poison_scan) finds this run by it.
  const std::string digest = poison::dataset_digest(train);
  run.set_tag("dataset_sha256", digest);
  const auto& names = m.spec().class_names;

  nlohmann::json j = r.to_json(names);
  j["model"] = f.model;
  j["dataset"] = train.name;
  j["dataset_sha256"] = digest;
  std::vector<std::pair<std::string, std::string>> rows = {
      {"model", f.model + " (" + m.spec().arch + ")"},
      {"data", train.name + ", " + with_commas(train.size()) + " training rows"},
      {"method", poison::to_string(options.method()) + (options.whiten() ? " (whitened features)" : "")}};
  for (const auto& c : r.classes) {
    if (!c.flagged) continue;
    const auto& s = c.spectral && c.spectral->flagged ? *c.spectral : *c.clustering;
    rows.push_back({"flagged '" + c.name + "'", with_commas(s.suspect_size) + " of " + with_commas(c.rows) +
                                                    " rows; " + percent(s.suspect_other_labels, 0) +
                                                    " of their neighbours carry other labels (" +
                                                    percent(s.other_other_labels, 0) + " for the rest)"});
  }
  rows.push_back({"verdict", r.failed ? "FAILED: " + std::to_string(r.flagged_classes) + " class(es), " +
                                            with_commas(static_cast<int64_t>(r.suspected_rows.size())) + " suspected rows"
                                      : "no class flagged"});

  if (f.retrain || trigger) {
    const data::Dataset test = load_for_model(f.data, data::Split::kTest, m, !f.quiet);
    data::require_held_out(all, test);
    j["before"] = {{"accuracy", train::evaluate(m, test).accuracy()}};
    if (trigger) j["before"]["attack_success_rate"] = poison::attack_success_rate(m, test, *trigger);
    if (f.retrain) {
      const auto re = poison::retrain_without(m, train, r.suspected_rows, g.seed, !f.quiet);
      j["after"] = {{"accuracy", train::evaluate(re.model, test).accuracy()}, {"removed", re.removed}, {"rows", re.rows}};
      if (trigger) j["after"]["attack_success_rate"] = poison::attack_success_rate(re.model, test, *trigger);
    }
    auto line = [&](const nlohmann::json& x) {
      std::string s = "accuracy " + percent(x.at("accuracy").get<double>());
      if (x.contains("attack_success_rate")) s += ", attack success " + percent(x.at("attack_success_rate").get<double>());
      return s;
    };
    rows.push_back({"before", line(j["before"])});
    if (j.contains("after")) {
      rows.push_back({"retrained without suspects", line(j["after"])});
    }
  }
  if (trigger) j["trigger"] = trigger->to_json();
  if (!f.suspects.empty()) write_suspects(f.suspects, r, names);
  if (!f.out.empty()) atomic_write_file(f.out, j.dump(2) + "\n");
  run.finish(j, f.out);
  rows.push_back({"time", format_duration(r.seconds)});
  rows.push_back({"seed", std::to_string(g.seed)});
  print_result(g, j, rows);
}

}  // namespace

void register_poison(CLI::App& app, GlobalOptions& g) {
  auto* poison_cmd = app.add_subcommand("poison", "Training-set backdoor screening");
  poison_cmd->require_subcommand(1);
  auto flags = std::make_shared<PoisonFlags>();
  auto* cmd = poison_cmd->add_subcommand(
      "scan", "Spectral signatures and activation clustering on a trained model's features: suspected rows per class");
  cmd->add_option("--model", flags->model, "A model trained on the data (.pt), with features()")->required();
  add_data_options(cmd, flags->data);
  cmd->add_option("--limit", flags->limit, "First N training rows (default: the rows the model's spec says it trained on)");
  cmd->add_option("--method", flags->method, "spectral, clustering or both")->capture_default_str();
  cmd->add_option("--spectral-threshold", flags->spectral_threshold, "Spectral separation that splits a class")
      ->capture_default_str();
  cmd->add_option("--silhouette-threshold", flags->silhouette_threshold, "Silhouette that splits a class")
      ->capture_default_str();
  cmd->add_option("--neighbours", flags->neighbours, "Pixel-space neighbours that orient a split")->capture_default_str();
  cmd->add_option("--reference-rows", flags->reference_rows, "Rows the neighbours are drawn from")->capture_default_str();
  cmd->add_flag("--no-whiten", flags->no_whiten, "Split the raw features (as the papers do), not whitened ones");
  cmd->add_option("--out", flags->out, "Write the result as JSON");
  cmd->add_option("--suspects", flags->suspects, "Write the suspected rows as CSV (row,label,class,score,method)");
  cmd->add_flag("--retrain", flags->retrain, "Retrain without the suspects by the model's recipe; report test accuracy");
  cmd->add_option("--trigger-target", flags->trigger_target, "Measure a BadNets checkerboard trigger's success to this class");
  cmd->add_option("--trigger-source", flags->trigger_source, "... on this source class only (default: every other class)");
  cmd->add_option("--trigger-size", flags->trigger_size, "The trigger's side in pixels")->capture_default_str();
  cmd->add_flag("--quiet", flags->quiet, "No progress");
  add_registry_option(cmd, flags->registry);
  cmd->callback([flags, cmd, &g] { run_scan(*flags, *cmd, g); });
}

}  // namespace bulwark::cli
