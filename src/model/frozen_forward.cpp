#include "model/frozen_forward.h"

#include <torch/csrc/jit/api/module.h>
#include <torch/torch.h>

#include "model/forward_graph.h"

namespace bulwark::model {

FrozenForward::FrozenForward(const Model& m) : model_(m) {
  if (m.spec().normalises()) {
    mean_ = torch::tensor(m.spec().mean).view({1, -1, 1, 1});
    std_ = torch::tensor(m.spec().std).view({1, -1, 1, 1});
  }
  try {
    auto copy = model_.module().clone();  // its own methods: inlining below leaves the model's alone
    // freeze() inlines one level of calls under the plain interpreter, then drops the submodules'
    // methods a deeper call still names (a PyTorch Conv2d's _conv_forward): inline all of it first.
    inline_calls(*copy.get_method("forward").graph());
    // freeze() wants eval mode; modules built in C++ (the zoo) may have no training flag at all.
    for (auto sub : copy.modules()) {
      if (sub.hasattr("training")) sub.setattr("training", false);
    }
    auto frozen = torch::jit::freeze(copy, c10::nullopt, /*optimize_numerics=*/true);
    frozen_ = torch::jit::optimize_for_inference(frozen);
    optimized_ = true;
  } catch (const std::exception&) {
    optimized_ = false;  // run the model as it is
  }
}

torch::Tensor FrozenForward::operator()(const torch::Tensor& x) const {
  torch::NoGradGuard no_grad;
  if (!optimized_) {
    EvalMode eval(model_);
    return model_.logits(x);
  }
  // The frozen copy is the module alone: the spec's normalisation runs first, as in Model::logits.
  const torch::Tensor in = mean_.defined() ? (x - mean_) / std_ : x;
  auto out = const_cast<torch::jit::Module&>(frozen_).forward({in}).toTensor();
  return out.is_mkldnn() ? out.to_dense() : out;
}

}  // namespace bulwark::model
