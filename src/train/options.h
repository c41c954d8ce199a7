// train/options.h — settings for the training loop, validated when built.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

namespace bulwark::dist {
class Group;
}

namespace bulwark::train {

// TrainOptions().epochs(5).batch_size(128).lr(1e-3). Setters validate and throw
// invalid_argument naming the CLI flag, so a bad value never reaches the loop.
class TrainOptions {
 public:
  TrainOptions& epochs(int64_t v);
  TrainOptions& batch_size(int64_t v);
  TrainOptions& lr(double v);
  TrainOptions& weight_decay(double v);
  // "adam" (default) or "sgd" (momentum 0.9, the ResNet recipe); --optimizer.
  TrainOptions& optimizer(const std::string& v);
  TrainOptions& validation_fraction(double v);
  TrainOptions& seed(uint64_t v);
  TrainOptions& budget_seconds(double v);  // 0 = no budget
  TrainOptions& progress(bool v);
  // One-cycle schedule (Wong et al. 2020): lr rises linearly from 0 to lr() over the first 40 % of
  // the run, then falls linearly to 0. Off: constant lr(). Under a time budget the run's progress is
  // whichever is further along, steps or the clock, so the rate still reaches 0 when time runs out.
  TrainOptions& cyclic_lr(bool v);
  // Set to true from any thread to stop the run at the next batch, as if the budget ran out (the
  // best checkpoint so far is kept). Used by the closed loop to cancel a hardening job.
  TrainOptions& cancel_flag(std::shared_ptr<const std::atomic<bool>> flag);
  // Data-parallel over the group's ranks (train/distributed.h): batch_size() is the global batch,
  // each rank trains on its slice, rank 0 alone validates and runs the epoch hook. Null: one process.
  TrainOptions& process_group(std::shared_ptr<dist::Group> group);
  // The model's convolution weights in channels-last strides for the run (model::ChannelsLast),
  // NCHW again when it ends. On by default: several times faster pooling, results equal to
  // rounding (the sums run in another order); off, the run computes as before it existed.
  TrainOptions& channels_last(bool v);
  // Random crop (padding 4) + horizontal flip of every training batch (data/augment.h): the standard
  // augmentation for small RGB images. Off by default; the CLI turns it on for RGB data.
  TrainOptions& augment(bool v);
  // Weight averaging (EMA; Polyak averaging as timm's ModelEmaV2 and the adversarial-training
  // literature use it): after every step, avg <- d * avg + (1 - d) * weights, with d warming up as
  // min(decay, (1 + t) / (10 + t)). Validation, the epoch hook, the best checkpoint and the model
  // returned are the average; training continues from the raw weights. 0 = off; else in [0.5, 1).
  TrainOptions& ema_decay(double v);

  // The options a model's spec records (to_json(): `bulwark train` writes them as training.options)
  // as they were set; seed and progress are not part of a recipe. A key missing is an error that
  // names it and says to retrain with this version; ema_decay, recorded since it existed, reads
  // as 0 when absent (models from before trained without it).
  static TrainOptions from_recipe(const nlohmann::json& recipe);

  int64_t epochs() const { return epochs_; }
  int64_t batch_size() const { return batch_size_; }
  double lr() const { return lr_; }
  double weight_decay() const { return weight_decay_; }
  double validation_fraction() const { return validation_fraction_; }
  uint64_t seed() const { return seed_; }
  double budget_seconds() const { return budget_seconds_; }
  bool progress() const { return progress_; }
  bool cyclic_lr() const { return cyclic_lr_; }
  bool channels_last() const { return channels_last_; }
  bool augment() const { return augment_; }
  double ema_decay() const { return ema_decay_; }
  const std::string& optimizer() const { return optimizer_; }
  bool cancelled() const { return cancel_ && cancel_->load(); }
  const std::shared_ptr<dist::Group>& process_group() const { return group_; }
  // The learning rate at step `step` of `total` under the schedule, `elapsed_s` into the run.
  double lr_at(int64_t step, int64_t total, double elapsed_s = 0.0) const;

  nlohmann::json to_json() const;

 private:
  int64_t epochs_ = 3;
  int64_t batch_size_ = 128;
  double lr_ = 1e-3;  // Adam
  double weight_decay_ = 0.0;
  double validation_fraction_ = 0.05;
  uint64_t seed_ = 0;
  double budget_seconds_ = 0.0;
  bool progress_ = true;
  bool cyclic_lr_ = false;
  bool channels_last_ = true;
  bool augment_ = false;
  double ema_decay_ = 0.0;
  std::string optimizer_ = "adam";
  std::shared_ptr<const std::atomic<bool>> cancel_;
  std::shared_ptr<dist::Group> group_;
};

}  // namespace bulwark::train
