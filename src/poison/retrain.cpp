#include "poison/retrain.h"

#include <torch/torch.h>

#include "core/error.h"
#include "model/zoo.h"

namespace bulwark::poison {

train::TrainOptions recipe_options(const model::ModelSpec& spec, uint64_t seed, bool progress) {
  if (!spec.training.is_object() || !spec.training.contains("options")) {
    throw invalid_argument(
        "--retrain needs the model's training recipe, which its spec does not hold (an imported model): "
        "train it with `bulwark train`, or scan without --retrain");
  }
  return train::TrainOptions::from_recipe(spec.training.at("options")).seed(seed).progress(progress);
}

Retrained retrain_without(const model::Model& m, const data::Dataset& d, const std::vector<int64_t>& removed,
                          uint64_t seed, bool progress) {
  if (m.spec().arch == "torchscript" || m.spec().arch.empty()) {
    throw invalid_argument("--retrain builds a fresh model of the same architecture, and an imported TorchScript "
                           "model has none Bulwark can build: scan without --retrain");
  }
  const train::TrainOptions options = recipe_options(m.spec(), seed, progress);
  torch::Tensor keep = torch::ones({d.size()}, torch::kBool);
  if (!removed.empty()) keep.index_fill_(0, torch::tensor(removed, torch::kInt64), false);
  const data::Dataset kept = d.select(torch::nonzero(keep).squeeze(1));
  const auto split = data::split_train_validation(kept, options.validation_fraction(), seed);
  model::ModelSpec spec = m.spec();
  spec.training = nlohmann::json::object();
  spec.hardening = nlohmann::json::object();
  Retrained out{model::create_model(m.spec().arch, spec, seed), {}, kept.size(),
                d.size() - kept.size()};
  train::CrossEntropyObjective objective;
  out.training = train::fit(out.model, split.train, split.validation, options, objective);
  return out;
}

}  // namespace bulwark::poison
