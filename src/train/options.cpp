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

TrainOptions& TrainOptions::ema_decay(double v) {
  if (!(v == 0.0 || (v >= 0.5 && v < 1.0))) {
    throw invalid_argument("--ema must be 0 (off) or in [0.5, 1), e.g. 0.999, got " + std::to_string(v));
  }
  ema_decay_ = v;
  return *this;
}

namespace {

template <typename T>
T recipe_value(const nlohmann::json& recipe, const char* key) {
  if (!recipe.is_object() || !recipe.contains(key)) {
    throw invalid_argument(std::string("the model's training record has no options.") + key +
                           ": retrain it with this version's `bulwark train`");
  }
  try {
    return recipe.at(key).get<T>();
  } catch (const nlohmann::json::exception&) {
    throw invalid_argument(std::string("the model's training record has a malformed options.") + key);
  }
}

}  // namespace

TrainOptions TrainOptions::from_recipe(const nlohmann::json& r) {
  return TrainOptions()
      .epochs(recipe_value<int64_t>(r, "epochs"))
      .batch_size(recipe_value<int64_t>(r, "batch_size"))
      .lr(recipe_value<double>(r, "lr"))
      .optimizer(recipe_value<std::string>(r, "optimizer"))
      .weight_decay(recipe_value<double>(r, "weight_decay"))
      .validation_fraction(recipe_value<double>(r, "validation_fraction"))
      .budget_seconds(recipe_value<double>(r, "budget_seconds"))
      .cyclic_lr(recipe_value<std::string>(r, "lr_schedule") == "one-cycle")
      .channels_last(recipe_value<std::string>(r, "memory_format") == "channels_last")
      .augment(recipe_value<std::string>(r, "augment") != "none")
      .ema_decay(r.is_object() && r.contains("ema_decay") ? recipe_value<double>(r, "ema_decay") : 0.0);
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
          {"augment", augment_ ? "crop4+flip" : "none"}, {"ema_decay", ema_decay_},
          {"world_size", group_ ? group_->world_size() : 1}};
}

}  // namespace bulwark::train
