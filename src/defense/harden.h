// defense/harden.h — turn a model into a robust one with adversarial training, choosing the
// checkpoint with the best robust validation accuracy (PGD-10) and guarding Fast-AT against
// catastrophic overfitting.
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "attack/precision.h"
#include "attack/threat.h"
#include "data/dataset.h"
#include "model/model.h"
#include "train/trainer.h"

namespace bulwark::dist {
class Group;
}

namespace bulwark::defense {

struct HardenOptions {
  std::string method = "pgd-at";  // pgd-at | trades | fast-at
  std::string preset;             // the --preset it started from (recorded; the fields below rule)
  attack::Threat threat{attack::Norm::kLinf, 0.1, 0.0, 1.0};
  int64_t epochs = 5;
  int64_t batch_size = 128;
  double lr = 1e-3;
  std::string lr_schedule;       // constant | one-cycle; empty = the method's default (one-cycle for fast-at)
  int64_t pgd_steps = 7;         // PGD-AT and TRADES inner steps
  double trades_beta = 6.0;
  double fast_alpha = 1.25;      // Fast-AT step, in units of eps
  bool fast_random_init = true;
  double clean_weight = 0.0;     // PGD-AT and Fast-AT: weight of the clean loss
  double ema_decay = 0.0;        // weight averaging (train::TrainOptions::ema_decay); 0 = off
  double warmup_epochs = 1.0;    // eps ramps from 0 over this many epochs
  double budget_seconds = 0.0;   // 0 = none; stops at the best checkpoint
  int64_t validation_n = 500;    // held-out points for PGD-10 robust validation
  bool guard = true;             // Fast-AT catastrophic-overfitting guard
  uint64_t seed = 0;
  // Of the inner attack's gradient passes (attack::Precision); training steps and the PGD-10
  // checkpoint selection stay fp32.
  attack::Precision attack_precision = attack::Precision::kFp32;
  bool channels_last = true;  // train::TrainOptions::channels_last
  bool augment = false;       // train::TrainOptions::augment (crop + flip; the CLI's default for RGB)
  bool progress = true;
  std::shared_ptr<const std::atomic<bool>> cancel;  // true: stop at the next batch (closed loop)
  // Data-parallel over this group (train::fit): batch_size is the global batch; each rank makes
  // the adversarial examples of its own slice; rank 0 validates. Null: one process.
  std::shared_ptr<dist::Group> group;

  // Throws invalid_argument naming the flag.
  void validate() const;
  // The schedule in effect: lr_schedule, or the method's default.
  std::string effective_lr_schedule() const;
  nlohmann::json to_json() const;
};

// Named recipes, each the winner of a measured comparison at its wall-clock budget on Fashion-MNIST's
// `cnn` (docs/defenses.md has the table and the commands): the method, its steps, epochs, schedule,
// rate, clean weight, weight averaging and the budget. The CLI's --preset applies one before the
// flags given explicitly, which override it.
struct HardenPreset {
  std::string name;
  std::string method;
  int64_t pgd_steps = 7;
  int64_t epochs = 5;
  std::string lr_schedule;
  double lr = 1e-3;
  double clean_weight = 0.0;
  double ema_decay = 0.0;
  double budget_minutes = 0.0;
  std::string measured;  // what it reached, as docs/defenses.md records it
};

const std::vector<HardenPreset>& harden_presets();
// Throws invalid_argument naming --preset and the known names.
const HardenPreset& find_harden_preset(const std::string& name);

struct HardenResult {
  train::TrainResult train;
  std::vector<std::string> events;  // e.g. the overfitting guard firing
  nlohmann::json to_json() const;
};

// Robust accuracy of m on (x, y) under PGD with `steps` steps of eps/4 (random start): the
// fraction of points classified correctly both clean and attacked (attack::robust_points), with
// the model in eval mode whatever mode it is in (it is handed back in that mode).
double pgd_accuracy(const model::Model& m, const attack::Threat& t, const torch::Tensor& x, const torch::Tensor& y,
                    int64_t steps, uint64_t seed);

// Hardens `m` in place (fine-tuning from its current weights) on `train`, validating on
// `validation`. It trains in train mode and validates in eval mode, whatever mode m arrives in;
// m ends in eval mode with the checkpoint (weights and buffers) of best PGD-10 validation accuracy.
HardenResult harden(model::Model& m, const data::Dataset& train, const data::Dataset& validation,
                    const HardenOptions& o);

}  // namespace bulwark::defense
