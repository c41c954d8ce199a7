// poison/retrain.h — what removing the suspects does: the model retrained on the set without them,
// by its own recipe (the spec's training record, as `bulwark train` wrote it).
#pragma once

#include <cstdint>
#include <vector>

#include <nlohmann/json.hpp>

#include "data/dataset.h"
#include "model/model.h"
#include "train/train.h"

namespace bulwark::poison {

// The spec's training options (spec.training.options) as TrainOptions with `seed`. Throws
// invalid_argument naming what is missing when the spec has no training record (an imported model).
train::TrainOptions recipe_options(const model::ModelSpec& spec, uint64_t seed, bool progress);

struct Retrained {
  model::Model model;
  train::TrainResult training;
  int64_t rows = 0;     // rows trained and validated on (the set less the removed rows)
  int64_t removed = 0;
};

// A fresh model of m's architecture trained by m's recipe on `d` without `removed` (row ids of d),
// split into training and validation rows as the recipe says. A zoo model only.
Retrained retrain_without(const model::Model& m, const data::Dataset& d, const std::vector<int64_t>& removed,
                          uint64_t seed, bool progress);

}  // namespace bulwark::poison
