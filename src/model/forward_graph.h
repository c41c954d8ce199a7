// model/forward_graph.h — the graph Bulwark runs for a model's forward(): the module's own graph,
// inlined, with rewrites that change how fast it runs but not one bit of its logits or of any
// gradient in NCHW (rewrites 3 and 4 compute the first layer of channels-last gradient passes their
// own way: its input gradient, and with a 2x2 pool after it its values too, equal to rounding). The
// module itself, and what Model::save writes, stay untouched: a saved model loads in PyTorch and
// KServe as before.
//
// Rewrites (tests/model/forward_graph_test.cpp checks logits and input gradients bit for bit
// against the untouched module for NCHW inputs, PyTorch-exported models included):
//  1. relu then max-pool becomes max-pool then relu, when nothing else reads the relu's output.
//     relu is monotone, so the maximum of relu(x) over a window is relu of the maximum, and the
//     gradient reaches the same element (where the window's maximum is <= 0, both give zero); the
//     relu and its backward then touch a quarter of the elements (2x2 pools).
//  2. aten::max_pool2d becomes bulwark::max_pool2d (model/max_pool.h): the same values from a
//     vectorized kernel in passes without autograd (verdicts, Square's queries, serving); under
//     autograd it is ATen's operator.
//  3. aten::conv2d becomes bulwark::conv2d (model/conv2d.h): ATen's convolution, except the input
//     gradient of a one-input-channel convolution in a channels-last gradient pass, which comes from
//     our kernel (equal to rounding; those passes decide nothing, attack/base.h).
//  4. a bulwark::conv2d read only by a bulwark::max_pool2d becomes bulwark::conv2d_max_pool2d
//     (model/conv_pool.h): exactly those two operators, except in a channels-last gradient pass
//     through a one-input-channel convolution and a 2x2 pool, which runs fused (equal to rounding).
//     Only when nothing between the two in the graph writes in place or has side effects.
// Why here and not in the attacks: every caller of Model::logits — attacks, the hardening step, the
// gate, training, serving — runs the same graph, so what is measured is what is served.
#pragma once

#include <torch/script.h>

#include <memory>

namespace bulwark::model {

// Inlines every method and function call in `graph`, however deeply nested. Model runs modules
// with the plain interpreter (model.cpp), under which torch::jit::Inline takes each callee's graph
// uninlined and so inlines one level per pass; TorchScript's own passes that inline (freeze, ...)
// stop there too and leave calls to methods they then remove.
void inline_calls(torch::jit::Graph& graph);

class ForwardGraph {
 public:
  struct Rewrites {
    int relu_after_pool = 0;  // rewrite 1
    int own_max_pool = 0;     // rewrite 2
    int own_conv2d = 0;       // rewrite 3
    int conv_pool = 0;        // rewrite 4
    int total() const { return relu_after_pool + own_max_pool + own_conv2d + conv_pool; }
  };

  // Rewrites a copy of `module`'s forward graph. Throws if the graph cannot be built; callers fall
  // back to the module's own forward.
  explicit ForwardGraph(const torch::jit::Module& module);

  // forward(x) of `module` (the one it was built from, or a copy of it: the graph reads parameters,
  // buffers and the training flag from the object it is given). Autograd follows the caller's mode.
  torch::Tensor operator()(const torch::jit::Module& module, const torch::Tensor& x) const;

  const Rewrites& rewrites() const { return rewrites_; }

 private:
  std::shared_ptr<torch::jit::Function> function_;
  Rewrites rewrites_;
};

}  // namespace bulwark::model
