#include "poison/retrain.h"

#include <torch/torch.h>

#include "core/error.h"
#include "model/zoo.h"

namespace bulwark::poison {
namespace {

template <typename T>
T recipe_value(const nlohmann::json& recipe, const char* key) {
  if (!recipe.contains(key)) {
    throw invalid_argument(std::string("--retrain: the model's training record has no options.") + key +
                           ": retrain it with this version's `bulwark train`");
  }
  return recipe.at(key).get<T>();
}

}  // namespace

train::TrainOptions recipe_options(const model::ModelSpec& spec, uint64_t seed, bool progress) {
  if (!spec.training.is_object() || !spec.training.contains("options")) {
    throw invalid_argument(
        "--retrain needs the model's training recipe, which its spec does not hold (an imported model): "
        "train it with `bulwark train`, or scan without --retrain");
  }
  const nlohmann::json& r = spec.training.at("options");
  return train::TrainOptions()
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
      .seed(seed)
      .progress(progress);
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
