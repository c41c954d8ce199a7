// bulwark attack — red-team a model: run the attack suite and report robust accuracy.
#include <torch/torch.h>

#include <cstdio>
#include <iostream>

#include "attack/attack.h"
#include "attack/squeeze.h"
#include "cli/common.h"
#include "cli/data_flags.h"
#include "cli/run_record.h"
#include "core/error.h"
#include "core/files.h"
#include "core/progress.h"
#include "data/dataset.h"
#include "model/model.h"

namespace bulwark::cli {
namespace {

struct AttackFlags {
  std::string model;
  DataFlags data;
  std::string attacks = "auto";
  std::string eps = "0.1";
  std::string norm = "linf";
  std::string precision = "fp32";
  int64_t n = 1000;
  int64_t batch = 256;
  int64_t steps = 20;
  int64_t apgd_steps = 100;
  int64_t restarts = 1;
  int64_t queries = 5000;
  std::string save_adv;
  std::string defense;  // feature squeezing in front of the model, attacked through BPDA
  bool no_bpda = false;
  bool no_masking_checks = false;
  bool quiet = false;
  std::string registry;  // record the run there
};

void print_table(const attack::RobustnessReport& r) {
  std::printf("\n%-10s %6s %11s %8s %9s %9s %8s %8s\n", "attack", "eps", "robust acc", "success", "max norm",
              "mean norm", "queries", "time");
  for (const auto& row : r.rows) {
    const std::string q = row.mean_queries >= 0 ? std::to_string(static_cast<int64_t>(row.mean_queries + 0.5)) : "-";
    std::printf("%-10s %6g %11s %8s %9.4f %9.4f %8s %8s\n", row.attack.c_str(), row.eps,
                percent(row.robust_accuracy, 1).c_str(), percent(row.success_rate, 1).c_str(), row.max_norm,
                row.mean_norm, q.c_str(), format_duration(row.seconds).c_str());
  }
  for (const auto& w : r.worst) {
    std::printf("%-10s %6g %11s\n", "worst case", w.eps, percent(w.robust_accuracy, 1).c_str());
  }
  if (!r.warnings.empty()) {
    std::printf("\nwarnings (possible gradient masking):\n");
    for (const auto& w : r.warnings) std::printf("  ! %s\n", w.c_str());
  }
  std::fflush(stdout);
}

void save_adversarials(const std::string& path, const attack::RobustnessReport& r, const torch::Tensor& x,
                       const torch::Tensor& y) {
  c10::Dict<std::string, at::Tensor> out;
  out.insert("x", x);
  out.insert("y", y);
  for (const auto& w : r.worst) {
    char key[64];
    std::snprintf(key, sizeof key, "adv_eps_%g", w.eps);
    out.insert(key, w.adversarial);
  }
  const std::vector<char> bytes = torch::pickle_save(out);
  atomic_write_file(path, std::string(bytes.begin(), bytes.end()));
}

void run_attack(const AttackFlags& f, const CLI::App& cmd, const GlobalOptions& g) {
  apply_threads(g);
  CommandRun run(f.registry, "attack", cmd, g);
  attack::SuiteOptions o;
  o.attacks = attack::parse_attack_list(f.attacks);
  o.cascade = f.attacks == "auto";
  o.eps = attack::parse_eps_list(f.eps);
  o.settings.norm = attack::parse_norm(f.norm);
  o.settings.seed = g.seed;
  o.settings.pgd_steps = f.steps;
  o.settings.apgd_steps = f.apgd_steps;
  o.settings.restarts = f.restarts;
  o.settings.square_queries = f.queries;
  o.settings.batch_size = f.batch;
  o.progress = !f.quiet;
  o.masking_checks = !f.no_masking_checks;
  const attack::Precision precision = attack::parse_precision(f.precision);
  // Validate every attack's options before loading anything (errors name the flag).
  for (const auto& name : o.attacks) {
    for (double eps : o.eps) attack::make_attack(name, eps, o.settings);
  }

  if (!f.defense.empty()) attack::parse_squeezer(f.defense, 0, 1);  // bad specs fail before any work

  model::Model m = model::Model::load(f.model);
  o.settings.lo = m.spec().lo;
  o.settings.hi = m.spec().hi;
  const auto d = load_for_model(f.data, data::Split::kTest, m, !f.quiet).head(f.n, "--n");
  d.require_in_memory(parse_memory(f.data.max_memory), "bulwark attack", "--n");
  m.check_input(d.images.narrow(0, 0, 1));
  const auto x = d.inputs(), y = d.targets();

  model::FrozenParameters frozen(m);
  attack::LogitsFn f_attacked = attack::logits_of(m, precision);
  if (!f.defense.empty()) {
    // Non-differentiable preprocessors overstate robustness against plain gradients: attack them
    // with straight-through gradients (BPDA) unless asked to show the naive figure.
    const auto squeeze = attack::parse_squeezer(f.defense, m.spec().lo, m.spec().hi);
    const auto base = f_attacked;
    f_attacked = f.no_bpda ? attack::LogitsFn([base, squeeze](const torch::Tensor& v) { return base(squeeze(v)); },
                                                        base.exact_gradient_pass())
                           : attack::bpda(base, squeeze);
  }
  const auto report = attack::evaluate_robustness(f_attacked, x, y, o);
  if (!f.save_adv.empty()) save_adversarials(f.save_adv, report, x, y);
  auto record = report.to_json();
  record["precision"] = attack::to_string(precision);
  run.finish(record, f.save_adv);

  if (g.json) {
    auto j = report.to_json();
    j["model"] = f.model;
    j["dataset"] = d.name;
    j["seed"] = g.seed;
    j["precision"] = attack::to_string(precision);
    if (!f.defense.empty()) {
      j["defense"] = f.defense;
      j["bpda"] = !f.no_bpda;
    }
    if (!f.save_adv.empty()) j["saved_adversarials"] = f.save_adv;
    std::cout << j.dump(2) << std::endl;
    return;
  }
  std::printf("model   %s (%s), %lld %s test images, clean accuracy %s\n", f.model.c_str(), m.spec().arch.c_str(),
              static_cast<long long>(report.n), d.name.c_str(), percent(report.clean_accuracy, 1).c_str());
  if (!f.defense.empty()) {
    std::printf(
        "defense %s (feature squeezing), attacked %s\n", f.defense.c_str(),
        f.no_bpda ? "with plain gradients: figures are overstated" : "through BPDA (straight-through gradients)");
  }
  std::printf("threat  %s, range [%g, %g], seed %llu, %s gradient passes%s\n", report.norm.c_str(), o.settings.lo,
              o.settings.hi, static_cast<unsigned long long>(g.seed), attack::to_string(precision).c_str(),
              o.cascade ? ", auto = apgd-ce -> apgd-t -> square (cumulative)" : "");
  print_table(report);
  if (!f.save_adv.empty()) std::printf("\nadversarial examples saved to %s (torch.load)\n", f.save_adv.c_str());
}

}  // namespace

void register_attack(CLI::App& app, GlobalOptions& g) {
  auto flags = std::make_shared<AttackFlags>();
  auto* cmd = app.add_subcommand("attack", "Evaluate robustness: run evasion attacks and report robust accuracy");
  cmd->add_option("--model", flags->model, "Model file (.pt)")->required();
  add_data_options(cmd, flags->data);
  cmd->add_option("--attacks", flags->attacks, "Comma list of fgsm, pgd, apgd-ce, apgd-dlr, apgd-t, square; or auto")
      ->capture_default_str();
  cmd->add_option("--eps", flags->eps, "Comma list of perturbation budgets")->capture_default_str();
  cmd->add_option("--norm", flags->norm, "linf or l2")->capture_default_str();
  cmd->add_option("--precision", flags->precision,
                  "fp32 or bf16: arithmetic of the gradient passes (every verdict is fp32)")
      ->capture_default_str();
  cmd->add_option("--n", flags->n, "Number of test images")->capture_default_str()->check(CLI::PositiveNumber);
  cmd->add_option("--batch", flags->batch, "Attack batch size")->capture_default_str()->check(CLI::Range(1, 65536));
  cmd->add_option("--steps", flags->steps, "PGD steps")->capture_default_str();
  cmd->add_option("--apgd-steps", flags->apgd_steps, "APGD iterations")->capture_default_str();
  cmd->add_option("--restarts", flags->restarts, "Random restarts (pgd, apgd, square)")->capture_default_str();
  cmd->add_option("--queries", flags->queries, "Square query budget per point")->capture_default_str();
  cmd->add_option("--save-adv", flags->save_adv, "Write clean and worst-case adversarial tensors (torch.load-able)");
  cmd->add_option("--defense", flags->defense,
                  "Feature squeezing in front of the model: bits:N, median:K, joined by +");
  cmd->add_flag("--no-bpda", flags->no_bpda, "With --defense: attack through plain gradients (overstates robustness)");
  cmd->add_flag("--no-masking-checks", flags->no_masking_checks, "Skip the gradient-masking probes");
  cmd->add_flag("--quiet", flags->quiet, "No progress bars");
  add_registry_option(cmd, flags->registry);
  cmd->callback([flags, cmd, &g] { run_attack(*flags, *cmd, g); });
}

}  // namespace bulwark::cli
