// bulwark harden — adversarial training from an existing model; saves the robust checkpoint.
#include <torch/torch.h>

#include <chrono>
#include <cstdio>
#include <iostream>

#include "attack/attack.h"
#include "cli/common.h"
#include "cli/data_flags.h"
#include "cli/run_record.h"
#include "core/error.h"
#include "core/progress.h"
#include "data/dataset.h"
#include "defense/defense.h"
#include "dist/group.h"
#include "model/model.h"
#include "train/train.h"

namespace bulwark::cli {
namespace {

struct HardenFlags {
  std::string model, out;
  std::string registry;  // record the run there
  DataFlags data;
  std::string norm = "linf";
  std::string attack_precision = "fp32";
  std::string preset;
  defense::HardenOptions o;
  double budget_minutes = 0;
  double val_fraction = 0.05;
  int64_t limit = 0;
  int64_t eval_n = 1000;
  bool no_random_init = false, no_guard = false, nchw = false, quiet = false;
  dist::Flags dist;  // data-parallel job (--dist-*, or the launcher's variables)
};

// Seconds per image of plain training on this machine, for "cost relative to a standard epoch".
double standard_seconds_per_image(const model::Model& base, const data::Dataset& d, int64_t batch) {
  auto m = base.clone();
  train::CrossEntropyObjective ce;
  const auto sample = d.head(std::min<int64_t>(d.size(), batch * 20));
  const auto r = train::fit(m, sample, {}, train::TrainOptions().epochs(1).batch_size(batch).progress(false), ce);
  return 1.0 / r.images_per_s;
}

void run_harden(HardenFlags f, const CLI::App& cmd, const GlobalOptions& g) {
  apply_threads(g);
  // Every rank hardens its slice of each batch; rank 0 alone validates, evaluates, saves and
  // records the run.
  const auto group = join_process_group(f.dist, !f.quiet);
  const bool lead = !group || group->rank() == 0;
  std::unique_ptr<CommandRun> run;
  if (lead) run = std::make_unique<CommandRun>(f.registry, "harden", cmd, g);
  if (!f.preset.empty()) {
    // The preset's recipe, except where a flag was given.
    const defense::HardenPreset& p = defense::find_harden_preset(f.preset);
    const auto unless_given = [&cmd](const char* flag, auto& field, const auto& value) {
      if (cmd.count(flag) == 0) field = value;
    };
    unless_given("--method", f.o.method, p.method);
    // The inner steps belong to the preset's method: with another --method, that method's default.
    if (f.o.method == p.method) unless_given("--steps", f.o.pgd_steps, p.pgd_steps);
    unless_given("--epochs", f.o.epochs, p.epochs);
    unless_given("--lr-schedule", f.o.lr_schedule, p.lr_schedule);
    unless_given("--lr", f.o.lr, p.lr);
    unless_given("--clean-weight", f.o.clean_weight, p.clean_weight);
    unless_given("--ema", f.o.ema_decay, p.ema_decay);
    unless_given("--budget-minutes", f.budget_minutes, p.budget_minutes);
    f.o.preset = p.name;
  }
  f.o.threat.norm = attack::parse_norm(f.norm);
  f.o.attack_precision = attack::parse_precision(f.attack_precision, "--attack-precision");
  f.o.budget_seconds = f.budget_minutes * 60;
  f.o.fast_random_init = !f.no_random_init;
  f.o.guard = !f.no_guard;
  f.o.channels_last = !f.nchw;
  f.o.seed = g.seed;
  f.o.progress = !f.quiet;
  f.o.group = group;
  model::Model m = model::Model::load(f.model);
  f.o.threat.lo = m.spec().lo;
  f.o.threat.hi = m.spec().hi;
  f.o.validate();
  if (!(f.val_fraction > 0 && f.val_fraction < 0.9)) throw invalid_argument("--val-fraction must be in (0, 0.9)");

  auto train_set = load_for_model(f.data, data::Split::kTrain, m, !f.quiet);
  if (f.limit > 0) train_set = train_set.head(f.limit, "--limit");
  const auto test = load_for_model(f.data, data::Split::kTest, m, !f.quiet).head(f.eval_n, "--eval-n");
  data::require_held_out(train_set, test);
  f.o.augment = augment_for(f.data, m.spec().input_shape[0]);
  const auto split = data::split_train_validation(train_set, f.val_fraction, g.seed);
  // Of the validation split, harden converts the --val-n points of its PGD-10 check at once.
  split.validation.head(std::min(f.o.validation_n, split.validation.size()), "--val-n")
      .require_in_memory(parse_memory(f.data.max_memory), "bulwark harden", "--val-n");

  const double std_s = lead ? standard_seconds_per_image(m, split.train, f.o.batch_size) : 0;
  const auto result = defense::harden(m, split.train, split.validation, f.o);
  if (!lead) return finish_rank(group);
  const double adv_s = result.train.images_per_s > 0 ? 1.0 / result.train.images_per_s : 0;

  // Summary on the test set: clean and PGD-20 (the gate's attack), parameters frozen.
  const auto eval = train::evaluate(m, test);
  double robust = 0;
  {
    model::FrozenParameters frozen(m);
    robust = defense::pgd_accuracy(m, f.o.threat, test.inputs(), test.targets(), 20, g.seed);
  }
  nlohmann::json summary = {{"clean_accuracy", eval.accuracy()},
                            {"pgd20_accuracy", robust},
                            {"test_images", eval.n},
                            {"seconds", result.train.seconds},
                            {"cost_per_epoch_vs_standard", std_s > 0 ? adv_s / std_s : 0},
                            {"best_epoch", result.train.best_epoch},
                            {"events", result.events}};
  m.mutable_spec().hardening = {{"options", f.o.to_json()}, {"from", f.model}, {"summary", summary},
                                {"train", result.train.to_json()}};
  m.save(f.out);

  char line[160];
  std::vector<std::pair<std::string, std::string>> rows = {
      {"method", f.o.method + " (" + attack::to_string(f.o.threat.norm) + ", eps " + std::to_string(f.o.threat.eps) + ")"},
      {"from", f.model},
      {"epochs", std::to_string(result.train.epochs.size()) + " (best " + std::to_string(result.train.best_epoch) +
                     (result.train.stopped_by_budget ? ", stopped by --budget-minutes" : "") + ")"},
      {"clean accuracy", percent(eval.accuracy()) + " (" + with_commas(eval.n) + " test images)"},
      {"PGD-20 accuracy", percent(robust)},
      {"time", format_duration(result.train.seconds)}};
  if (group) {
    rows.push_back(
        {"ranks", ranks_text(result.train.world_size, result.train.communication_seconds, result.train.seconds)});
  }
  std::snprintf(line, sizeof line, "%.1fx a standard epoch", std_s > 0 ? adv_s / std_s : 0.0);
  rows.push_back({"cost per epoch", line});
  for (const auto& e : result.events) rows.push_back({"guard", e});
  rows.push_back({"saved", f.out});
  summary["model"] = f.out;
  summary["options"] = f.o.to_json();
  summary["train"] = result.train.to_json();
  run->finish(summary, f.out);
  print_result(g, summary, rows);
  finish_rank(group);
}

}  // namespace

void register_harden(CLI::App& app, GlobalOptions& g) {
  auto f = std::make_shared<HardenFlags>();
  auto* cmd = app.add_subcommand("harden", "Adversarially train a model (PGD-AT, TRADES, Fast-AT) and save it");
  cmd->add_option("--model", f->model, "Model to start from (.pt)")->required();
  cmd->add_option("--out", f->out, "Where to write the hardened model")->required();
  cmd->add_option("--preset", f->preset,
                  "A measured recipe (docs/defenses.md): loop (10 minutes, the closed loop's); flags given "
                  "explicitly override its values");
  cmd->add_option("--method", f->o.method, "pgd-at, trades or fast-at")->capture_default_str();
  cmd->add_option("--eps", f->o.threat.eps, "Perturbation budget")->capture_default_str();
  cmd->add_option("--norm", f->norm, "linf or l2")->capture_default_str();
  cmd->add_option("--epochs", f->o.epochs, "Epochs")->capture_default_str();
  cmd->add_option("--batch", f->o.batch_size, "Batch size")->capture_default_str()->check(CLI::Range(1, 65536));
  cmd->add_option("--lr", f->o.lr, "Adam learning rate (the peak under one-cycle)")->capture_default_str();
  cmd->add_option("--lr-schedule", f->o.lr_schedule,
                  "constant or one-cycle (default: one-cycle for fast-at, constant otherwise); under "
                  "--budget-minutes one-cycle follows the clock and reaches 0 when time runs out");
  cmd->add_option("--steps", f->o.pgd_steps, "Inner PGD steps (pgd-at, trades)")->capture_default_str();
  cmd->add_option("--attack-precision", f->attack_precision,
                  "fp32 or bf16: arithmetic of the inner attack's gradient passes (training steps stay fp32)")
      ->capture_default_str();
  cmd->add_option("--beta", f->o.trades_beta, "TRADES beta")->capture_default_str();
  cmd->add_option("--alpha", f->o.fast_alpha, "Fast-AT step size in units of eps")->capture_default_str();
  cmd->add_flag("--no-random-init", f->no_random_init, "Fast-AT without random start (overfits; for testing the guard)");
  cmd->add_option("--ema", f->o.ema_decay,
                  "Weight averaging: validate, keep and save an exponential moving average of the weights with this "
                  "decay (e.g. 0.999); 0 = off")
      ->capture_default_str();
  cmd->add_option("--clean-weight", f->o.clean_weight, "PGD-AT and Fast-AT: weight of the clean loss (the rest on the adversarial loss)")->capture_default_str();
  cmd->add_option("--warmup-epochs", f->o.warmup_epochs, "Ramp eps from 0 over this many epochs")->capture_default_str();
  cmd->add_option("--budget-minutes", f->budget_minutes, "Stop at the best checkpoint when time runs out");
  add_data_options(cmd, f->data);
  add_augment_options(cmd, f->data);
  cmd->add_option("--limit", f->limit, "Use the first N training images")->check(CLI::PositiveNumber);
  cmd->add_option("--val-fraction", f->val_fraction, "Held-out validation fraction")->capture_default_str();
  cmd->add_option("--val-n", f->o.validation_n, "Validation points for PGD-10 checkpoint selection")->capture_default_str();
  cmd->add_option("--eval-n", f->eval_n, "Test images for the final clean/PGD-20 summary")->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_flag("--no-guard", f->no_guard, "Disable the Fast-AT catastrophic-overfitting guard");
  cmd->add_flag("--nchw", f->nchw,
                "Train with the convolution weights in NCHW strides, not channels-last (slower; the sums in "
                "the order Bulwark used before)");
  cmd->add_flag("--quiet", f->quiet, "No progress bars");
  add_registry_option(cmd, f->registry);
  add_dist_options(cmd, f->dist);
  cmd->callback([f, cmd, &g] { run_harden(*f, *cmd, g); });
}

}  // namespace bulwark::cli
