// bulwark detect — calibrate per-input attack detectors for a model, and evaluate them offline
// against the attack suite and an adaptive attacker.
#include <torch/torch.h>

#include <cstdio>
#include <iostream>
#include <sstream>

#include "attack/factory.h"
#include "cli/common.h"
#include "cli/data_flags.h"
#include "cli/run_record.h"
#include "core/digest.h"
#include "core/error.h"
#include "data/dataset.h"
#include "detect/calibration.h"
#include "detect/evaluate.h"
#include "detect/monitor_fit.h"
#include "model/model.h"

namespace bulwark::cli {
namespace {

struct CalibrateFlags {
  std::string model;
  DataFlags data;
  std::string detectors = "max-softmax,pca";
  std::string squeezers = "bits:4,median:2";
  double fpr = 0.01;
  int64_t fit_n = 10000;
  double val_fraction = 0.05;
  std::string out;
};

struct EvaluateFlags {
  std::string model, calibration;
  DataFlags data;
  std::string attacks = "fgsm,pgd,apgd-ce,square";
  std::string eps = "0.1";
  int64_t n = 1000;
  int64_t offset = 0;
  int64_t batch = 256;
  int64_t steps = 20;
  int64_t queries = 5000;
  int64_t adaptive_steps = 100;
  double adaptive_weight = 5.0;
  bool no_adaptive = false;
  bool quiet = false;
  std::string registry;  // record the run there
};

std::vector<std::string> split_csv(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream in(s);
  std::string item;
  while (std::getline(in, item, ',')) out.push_back(item);
  return out;
}

void run_calibrate(const CalibrateFlags& f, const GlobalOptions& g) {
  apply_threads(g);
  detect::CalibrationOptions o;
  o.detectors = detect::parse_detector_list(f.detectors, "--detectors");
  o.squeezers = split_csv(f.squeezers);
  o.fpr = f.fpr;
  o.validate();
  if (f.fit_n < 100) throw invalid_argument("--fit-n must be >= 100");
  auto m = model::Model::load(f.model);
  m.set_training(false);
  // Held-out clean data the model never trained on: the validation part of the training split
  // `bulwark train` used (same seed and fraction), so the test set stays for evaluation.
  const auto train = load_for_model(f.data, data::Split::kTrain, m);
  m.check_input(train.images.narrow(0, 0, 1));
  const auto split = data::split_train_validation(train, f.val_fraction, m.spec().seed);
  const auto fit = split.train.head(std::min(f.fit_n, split.train.size()), "--fit-n");
  fit.require_in_memory(parse_memory(f.data.max_memory), "bulwark detect calibrate", "--fit-n");
  split.validation.require_in_memory(parse_memory(f.data.max_memory), "bulwark detect calibrate", "--val-fraction");
  const auto sha = sha256_file_hex(f.model);
  auto set = detect::DetectorSet::calibrate(m, sha, o, fit.inputs(), fit.targets(), split.validation.inputs());
  set.monitor_reference() =
      detect::fit_monitor_reference(set, m, split.validation.inputs(), split.validation.targets());
  set.save(f.out);
  nlohmann::json j{{"out", f.out},
                   {"model", f.model},
                   {"model_sha256", sha},
                   {"fpr", f.fpr},
                   {"fit_points", fit.size()},
                   {"reference_points", split.validation.size()},
                   {"detectors", set.names()},
                   {"thresholds", set.thresholds()},
                   {"combined_threshold", set.combined_threshold()}};
  std::vector<std::pair<std::string, std::string>> rows{
      {"calibration", f.out},
      {"model", f.model + " (sha256 " + sha.substr(0, 12) + "...)"},
      {"held-out",
       std::to_string(split.validation.size()) + " clean validation images, target FPR " + percent(f.fpr, 1)},
  };
  for (size_t d = 0; d < set.names().size(); ++d) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "threshold %.6g", set.thresholds()[d]);
    rows.push_back({set.names()[d], buf});
  }
  print_result(g, j, rows);
}

void print_detection_table(const detect::DetectionReport& r) {
  std::printf("\n%-12s %-9s %-12s %6s %6s %7s %9s %9s %9s %9s %9s\n", "detector", "attack", "target", "eps", "adv",
              "AUROC", "TPR@1%", "TPR@5%", "TPR@thr", "FPR@thr", "evasion");
  for (const auto& row : r.rows) {
    std::printf("%-12s %-9s %-12s %6g %6lld %7.3f %9s %9s %9s %9s %9s\n", row.detector.c_str(), row.attack.c_str(),
                row.target.empty() ? "-" : row.target.c_str(), row.eps, static_cast<long long>(row.positives),
                row.auroc, percent(row.tpr_at_1, 1).c_str(), percent(row.tpr_at_5, 1).c_str(),
                percent(row.tpr_at_threshold, 1).c_str(), percent(row.fpr_at_threshold, 1).c_str(),
                row.evasion >= 0 ? percent(row.evasion, 1).c_str() : "-");
  }
  std::fflush(stdout);
}

void run_evaluate(const EvaluateFlags& f, const CLI::App& cmd, const GlobalOptions& g) {
  apply_threads(g);
  CommandRun run(f.registry, "detect-evaluate", cmd, g);
  detect::EvaluateOptions o;
  o.attacks = f.attacks.empty() ? std::vector<std::string>{} : attack::parse_attack_list(f.attacks);
  o.eps = attack::parse_eps_list(f.eps);
  o.settings.seed = g.seed;
  o.settings.pgd_steps = f.steps;
  o.settings.square_queries = f.queries;
  o.settings.batch_size = f.batch;
  o.adaptive = !f.no_adaptive;
  o.adaptive_steps = f.adaptive_steps;
  o.adaptive_weight = f.adaptive_weight;
  o.progress = !f.quiet;
  o.validate();
  for (const auto& name : o.attacks) {
    for (double eps : o.eps) attack::make_attack(name, eps, o.settings);
  }
  auto m = model::Model::load(f.model);
  o.settings.lo = m.spec().lo;
  o.settings.hi = m.spec().hi;
  const auto set = detect::DetectorSet::load(f.calibration, m, sha256_file_hex(f.model));
  const auto test = load_for_model(f.data, data::Split::kTest, m, !f.quiet);
  if (f.offset < 0 || f.offset + f.n > test.size()) {
    throw invalid_argument("--offset + --n must be <= " + std::to_string(test.size()) + " test images");
  }
  const auto d = test.select(torch::arange(f.offset, f.offset + f.n));
  d.require_in_memory(parse_memory(f.data.max_memory), "bulwark detect evaluate", "--n");
  m.check_input(d.images.narrow(0, 0, 1));
  const auto report = detect::evaluate_detection(m, set, d.inputs(), d.targets(), o);
  run.finish(report.to_json());
  if (g.json) {
    auto j = report.to_json();
    j["model"] = f.model;
    j["calibration"] = f.calibration;
    j["seed"] = g.seed;
    std::cout << j.dump(2) << std::endl;
    return;
  }
  std::printf("model   %s, %lld %s test images from #%lld, clean accuracy %s\n", f.model.c_str(),
              static_cast<long long>(report.n), d.name.c_str(), static_cast<long long>(f.offset),
              percent(report.clean_accuracy, 1).c_str());
  std::printf("detect  %s calibrated at FPR %s; positives = successful adversarials of correctly classified points\n",
              f.calibration.c_str(), percent(report.fpr_target, 1).c_str());
  print_detection_table(report);
  std::printf("\nevasion: adaptive adversarials that are misclassified and not flagged, share of attacked points.\n");
}

}  // namespace

void register_detect(CLI::App& app, GlobalOptions& g) {
  auto* cmd = app.add_subcommand("detect", "Per-input attack detectors: calibrate, evaluate");
  cmd->require_subcommand(1);

  auto cf = std::make_shared<CalibrateFlags>();
  auto* cal = cmd->add_subcommand("calibrate", "Fit detectors on clean held-out data and store thresholds");
  cal->add_option("--model", cf->model, "Model file (.pt)")->required();
  add_data_options(cal, cf->data);
  cal->add_option("--detectors", cf->detectors, "Comma list of max-softmax, entropy, squeeze, mahalanobis, pca")
      ->capture_default_str();
  cal->add_option("--squeezers", cf->squeezers, "Comma list of squeezers for 'squeeze' (bits:N, median:K)")
      ->capture_default_str();
  cal->add_option("--fpr", cf->fpr, "Target false-positive rate on clean inputs")->capture_default_str();
  cal->add_option("--fit-n", cf->fit_n, "Training images that fit Mahalanobis and PCA")->capture_default_str();
  cal->add_option("--val-fraction", cf->val_fraction, "Held-out share of the training split (as in train)")
      ->capture_default_str()
      ->check(CLI::Range(0.01, 0.5));
  cal->add_option("--out", cf->out, "Calibration file to write (e.g. model.detect)")->required();
  cal->callback([cf, &g] { run_calibrate(*cf, g); });

  auto ef = std::make_shared<EvaluateFlags>();
  auto* ev = cmd->add_subcommand("evaluate", "Attack held-out points; AUROC and TPR per detector, attack and eps");
  ev->add_option("--model", ef->model, "Model file (.pt)")->required();
  ev->add_option("--calibration", ef->calibration, "Calibration file from detect calibrate")->required();
  add_data_options(ev, ef->data);
  ev->add_option("--attacks", ef->attacks, "Comma list of fgsm, pgd, apgd-ce, apgd-dlr, apgd-t, square")
      ->capture_default_str();
  ev->add_option("--eps", ef->eps, "Comma list of L-inf budgets")->capture_default_str();
  ev->add_option("--n", ef->n, "Test images")->capture_default_str()->check(CLI::PositiveNumber);
  ev->add_option("--offset", ef->offset, "First test image")->capture_default_str();
  ev->add_option("--batch", ef->batch, "Attack batch size")->capture_default_str()->check(CLI::Range(1, 65536));
  ev->add_option("--steps", ef->steps, "PGD steps")->capture_default_str();
  ev->add_option("--queries", ef->queries, "Square query budget per point")->capture_default_str();
  ev->add_option("--adaptive-steps", ef->adaptive_steps, "Adaptive attack PGD steps")->capture_default_str();
  ev->add_option("--adaptive-weight", ef->adaptive_weight, "Weight of the detector-evasion term")
      ->capture_default_str();
  ev->add_flag("--no-adaptive", ef->no_adaptive, "Skip the adaptive attacker");
  ev->add_flag("--quiet", ef->quiet, "No progress bars");
  add_registry_option(ev, ef->registry);
  ev->callback([ef, ev, &g] { run_evaluate(*ef, *ev, g); });
}

}  // namespace bulwark::cli
