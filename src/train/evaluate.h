// train/evaluate.h — clean accuracy, per-class accuracy and the confusion matrix.
#pragma once

#include <cstdint>
#include <vector>

#include <nlohmann/json.hpp>

#include "data/dataset.h"
#include "model/model.h"

namespace bulwark::train {

struct EvalResult {
  int64_t n = 0;
  int64_t correct = 0;
  std::vector<double> per_class_accuracy;        // index = label; NaN-free: classes absent report 0
  std::vector<int64_t> per_class_count;
  std::vector<std::vector<int64_t>> confusion;   // [true][predicted]
  std::vector<int64_t> predictions;              // per image, in the dataset's order
  double seconds = 0;

  double accuracy() const { return n ? static_cast<double>(correct) / static_cast<double>(n) : 0.0; }
  nlohmann::json to_json(const std::vector<std::string>& class_names) const;
};

// In eval mode (model::EvalMode), whatever mode m is in; m is handed back in that mode.
EvalResult evaluate(const model::Model& m, const data::Dataset& d, int64_t batch_size = 500);

// Fraction of `y` that argmax(logits) gets right.
double accuracy_of(const torch::Tensor& logits, const torch::Tensor& y);

}  // namespace bulwark::train
