// model/frozen_forward.h — a forward-only copy of a model, optimized for inference, for passes whose
// output steers a search and decides nothing (Square's queries: attack::LogitsFn::search_forward).
//
// The copy is the module's weights at construction, frozen (torch::jit::freeze: parameters become
// constants, BatchNorm folds into the convolution before it) and run through LibTorch's
// optimize_for_inference: where LibTorch has oneDNN, the convolutions run on prepacked weights and
// the activations stay in oneDNN's blocked layout from the first convolution to the last, instead
// of a weight and activation reorder in every call. Its logits agree with Model::logits to float
// rounding (~1e-6), not bit for bit, so it never decides a verdict: robust accuracy, a gate or a
// served answer always come from Model::logits.
#pragma once

#include <torch/script.h>

#include "model/model.h"

namespace bulwark::model {

class FrozenForward {
 public:
  // Freezes a copy of `m` as it is now; later changes to m's weights are not seen. When the module
  // cannot be frozen (a forward that writes its own attributes, ...) the copy runs Model::logits.
  explicit FrozenForward(const Model& m);

  // Logits for a batch, without autograd, in eval mode.
  torch::Tensor operator()(const torch::Tensor& x) const;

  // True when operator() runs the frozen, optimized copy; false when it falls back to Model::logits.
  bool optimized() const { return optimized_; }

 private:
  Model model_;
  torch::jit::Module frozen_;
  torch::Tensor mean_, std_;  // [1, C, 1, 1] when the spec normalises (Model::logits does it before the module)
  bool optimized_ = false;
};

}  // namespace bulwark::model
