#include "train/options.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "dist/group.h"

namespace bulwark::train {

TrainOptions& TrainOptions::epochs(int64_t v) {
  if (v < 1 || v > 100000) throw invalid_argument("--epochs must be in 1..100000, got " + std::to_string(v));
  epochs_ = v;
  return *this;
}
TrainOptions& TrainOptions::batch_size(int64_t v) {
  if (v < 1 || v > 65536) throw invalid_argument("--batch must be in 1..65536, got " + std::to_string(v));
  batch_size_ = v;
  return *this;
}
TrainOptions& TrainOptions::lr(double v) {
  if (!(v > 0 && v <= 10)) throw invalid_argument("--lr must be in (0, 10], got " + std::to_string(v));
  lr_ = v;
  return *this;
}
TrainOptions& TrainOptions::weight_decay(double v) {
  if (!(v >= 0 && v < 1)) throw invalid_argument("--weight-decay must be in [0, 1), got " + std::to_string(v));
  weight_decay_ = v;
  return *this;
}
TrainOptions& TrainOptions::validation_fraction(double v) {
  if (!(v >= 0 && v < 0.9)) throw invalid_argument("--val-fraction must be in [0, 0.9), got " + std::to_string(v));
  validation_fraction_ = v;
  return *this;
}
TrainOptions& TrainOptions::seed(uint64_t v) {
  seed_ = v;
  return *this;
}
TrainOptions& TrainOptions::cancel_flag(std::shared_ptr<const std::atomic<bool>> flag) {
  cancel_ = std::move(flag);
  return *this;
}

TrainOptions& TrainOptions::process_group(std::shared_ptr<dist::Group> group) {
  group_ = std::move(group);
  return *this;
}

TrainOptions& TrainOptions::budget_seconds(double v) {
  if (!(v >= 0 && std::isfinite(v))) throw invalid_argument("--budget-minutes must be >= 0");
  budget_seconds_ = v;
  return *this;
}
TrainOptions& TrainOptions::progress(bool v) {
  progress_ = v;
  return *this;
}

TrainOptions& TrainOptions::channels_last(bool v) {
  channels_last_ = v;
  return *this;
}

TrainOptions& TrainOptions::optimizer(const std::string& v) {
  if (v != "adam" && v != "sgd") throw invalid_argument("--optimizer must be adam or sgd, got '" + v + "'");
  optimizer_ = v;
  return *this;
}

TrainOptions& TrainOptions::augment(bool v) {
  augment_ = v;
  return *this;
}

TrainOptions& TrainOptions::cyclic_lr(bool v) {
  cyclic_lr_ = v;
  return *this;
}

double TrainOptions::lr_at(int64_t step, int64_t total, double elapsed_s) const {
  if (!cyclic_lr_ || total <= 0) return lr_;
  double t = static_cast<double>(step) / static_cast<double>(total);
  if (budget_seconds_ > 0) t = std::min(1.0, std::max(t, elapsed_s / budget_seconds_));
  return t < 0.4 ? lr_ * t / 0.4 : lr_ * std::max(0.0, (1.0 - t) / 0.6);
}

nlohmann::json TrainOptions::to_json() const {
  return {{"epochs", epochs_},   {"batch_size", batch_size_}, {"lr", lr_},     {"optimizer", optimizer_},
          {"weight_decay", weight_decay_}, {"validation_fraction", validation_fraction_}, {"seed", seed_},
          {"budget_seconds", budget_seconds_}, {"lr_schedule", cyclic_lr_ ? "one-cycle" : "constant"},
          {"memory_format", channels_last_ ? "channels_last" : "contiguous"},
          {"augment", augment_ ? "crop4+flip" : "none"},
          {"world_size", group_ ? group_->world_size() : 1}};
}

}  // namespace bulwark::train
