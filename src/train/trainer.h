// train/trainer.h — the one training loop (Adam, seeded shuffles, progress, best checkpoint,
// time budget). What a step optimises is pluggable: plain cross-entropy here; the defense
// module plugs adversarial objectives (PGD-AT, TRADES, Fast-AT) into the same loop.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "data/dataset.h"
#include "model/model.h"
#include "train/options.h"

namespace bulwark::train {

struct StepContext {
  int64_t epoch = 0;  // 0-based
  int64_t step = 0;   // 0-based within the epoch
  int64_t steps_per_epoch = 0;
  // Data-parallel: x is rows [shard_offset, shard_offset + x.size(0)) of a global batch of
  // global_batch rows. Random draws over the batch (attack starts) take those rows of the draw
  // for the global batch, so every rank trains on what one process would. 0: x is the batch.
  int64_t shard_offset = 0;
  int64_t global_batch = 0;
};

struct StepOutput {
  torch::Tensor loss;    // scalar to backpropagate
  torch::Tensor logits;  // for the running training accuracy (may be on adversarial inputs)
};

// What one optimisation step minimises. Called on the training thread only.
class Objective {
 public:
  virtual ~Objective() = default;
  virtual std::string name() const = 0;
  virtual StepOutput step(model::Model& m, const torch::Tensor& x, const torch::Tensor& y,
                          const StepContext& ctx) = 0;
  virtual nlohmann::json to_json() const { return {{"method", name()}}; }
  // State an epoch hook may change (Fast-AT's fall-back to PGD-2), as numbers: data-parallel fit
  // runs the hook on rank 0 and hands these to the other ranks.
  virtual std::vector<double> shared_state() const { return {}; }
  virtual void set_shared_state(const std::vector<double>& state) {}
};

// Standard training: cross-entropy on the clean batch.
class CrossEntropyObjective : public Objective {
 public:
  std::string name() const override { return "standard"; }
  StepOutput step(model::Model& m, const torch::Tensor& x, const torch::Tensor& y, const StepContext& ctx) override;
};

struct EpochStats {
  int64_t epoch = 0;  // 1-based, as printed
  double train_loss = 0;
  double train_accuracy = 0;
  double validation_accuracy = 0;
  double selection_score = 0;  // best checkpoint = highest; defaults to validation accuracy
  double seconds = 0;
  double images_per_s = 0;
  bool partial = false;  // cut short by the time budget
  // Set by a hook that loaded other weights into the model (a roll-back): with weight averaging they
  // become both the weights training goes on from and the average.
  bool model_replaced = false;
  nlohmann::json extra = nlohmann::json::object();  // hook-provided (e.g. robust accuracy)
  nlohmann::json to_json() const;
};

struct TrainResult {
  std::vector<EpochStats> epochs;
  int64_t best_epoch = 0;  // 1-based; the model returned holds this epoch's weights
  double seconds = 0;
  double images_per_s = 0;  // training images per second over the whole run
  bool stopped_by_budget = false;
  int world_size = 1;                // ranks that trained (data-parallel)
  double communication_seconds = 0;  // spent exchanging gradients (data-parallel)
  nlohmann::json to_json() const;
};

// After each epoch, may set stats.selection_score / stats.extra (e.g. robust validation).
using EpochHook = std::function<void(model::Model&, EpochStats&)>;

// Trains `m` in place: training steps in train mode, validation and the hook in eval mode,
// whatever mode m arrives in; m ends in eval mode. With a non-empty validation set, `m` ends
// holding the state (weights and buffers) of the epoch with the best selection score.
// Data-parallel (o.process_group()): every rank calls fit with the same data and options; rank 0's
// initial weights go to all, rank 0 alone validates and runs the hook, then its model and the
// objective's shared_state() go to the others, so every rank returns the same model and result
// (validation figures included; EpochStats::extra only on rank 0). Adversarial examples are made
// by each rank for its own slice. A failed peer throws (dist::Group) on every rank.
TrainResult fit(model::Model& m, const data::Dataset& train, const data::Dataset& validation, const TrainOptions& o,
                Objective& objective, const EpochHook& on_epoch_end = {});

}  // namespace bulwark::train
