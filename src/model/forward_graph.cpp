#include "model/forward_graph.h"

#include <torch/csrc/jit/api/function_impl.h>
#include <torch/csrc/jit/ir/ir.h>
#include <torch/csrc/jit/passes/constant_propagation.h>
#include <torch/csrc/jit/passes/dead_code_elimination.h>
#include <torch/csrc/jit/passes/inliner.h>

#include <vector>

#include "model/conv2d.h"
#include "model/conv_pool.h"
#include "model/max_pool.h"

namespace bulwark::model {
namespace {

using torch::jit::Block;
using torch::jit::Graph;
using torch::jit::Node;
using torch::jit::Value;

// The aten::conv2d overload bulwark::conv2d takes the place of (its schema is the same).
constexpr const char* kAtenConv2d =
    "aten::conv2d(Tensor input, Tensor weight, Tensor? bias=None, int[2] stride=1, int[2] padding=0, "
    "int[2] dilation=1, int groups=1) -> Tensor";

bool has_calls(Block* block) {
  for (Node* n : block->nodes()) {
    if (n->kind() == c10::Symbol::fromQualString("prim::CallMethod") ||
        n->kind() == c10::Symbol::fromQualString("prim::CallFunction")) {
      return true;
    }
    for (Block* sub : n->blocks()) {
      if (has_calls(sub)) return true;
    }
  }
  return false;
}

void find_nodes(Block* block, c10::Symbol kind, std::vector<Node*>& out) {
  for (Node* n : block->nodes()) {
    if (n->kind() == kind) out.push_back(n);
    for (Block* sub : n->blocks()) find_nodes(sub, kind, out);
  }
}

// Rewrite 1: relu(x) -> pool  becomes  pool(x) -> relu, when the relu's output (and, for the in-place
// relu_, its input) has no other reader.
bool move_relu_after(Graph& g, Node* pool) {
  Value* pooled_input = pool->input(0);
  Node* relu = pooled_input->node();
  const bool out_of_place = relu->kind() == c10::Symbol::fromQualString("aten::relu");
  const bool in_place = relu->kind() == c10::Symbol::fromQualString("aten::relu_");
  if (!(out_of_place || in_place) || relu->inputs().size() != 1 || relu->outputs().size() != 1) return false;
  if (pooled_input->uses().size() != 1 || relu->owningBlock() != pool->owningBlock()) return false;
  if (in_place && relu->input(0)->uses().size() != 1) return false;
  pool->replaceInput(0, relu->input(0));
  Node* after = g.create(c10::Symbol::fromQualString("aten::relu"), 1);
  after->insertAfter(pool);
  after->output()->setType(pool->output()->type());
  pool->output()->replaceAllUsesWith(after->output());
  after->addInput(pool->output());
  relu->destroy();
  return true;
}

// Rewrites 2 and 3: the same arguments, our operator (it hands the cases it does not cover back to
// ATen).
void use_own(Graph& g, Node* node, c10::Symbol own_kind) {
  Node* own = g.create(own_kind, node->inputs(), 1);
  own->insertBefore(node);
  own->output()->setType(node->output()->type());
  node->output()->replaceAllUsesWith(own->output());
  node->destroy();
}

// Whether a node, or one inside its blocks, writes in place or has side effects.
bool may_write(Node* n) {
  const auto* schema = n->maybeSchema();
  if (n->hasSideEffects() || (schema && schema->is_mutable())) return true;
  for (Block* b : n->blocks()) {
    for (Node* inner : b->nodes()) {
      if (may_write(inner)) return true;
    }
  }
  return false;
}

// Rewrite 4: bulwark::conv2d whose only reader is a bulwark::max_pool2d becomes one
// bulwark::conv2d_max_pool2d with both operators' arguments.
bool fuse_conv_pool(Graph& g, Node* pool) {
  Value* activation = pool->input(0);
  Node* conv = activation->node();
  if (conv->kind() != conv2d_symbol() || activation->uses().size() != 1) return false;
  if (conv->owningBlock() != pool->owningBlock() || conv->inputs().size() != 7 || pool->inputs().size() != 6) {
    return false;
  }
  // The fused operator runs where the pool was: nothing in between may write in place (it could
  // change the convolution's input, weight or bias) or have side effects.
  for (Node* n = conv->next(); n != pool; n = n->next()) {
    if (may_write(n)) return false;
  }
  std::vector<Value*> inputs(conv->inputs().begin(), conv->inputs().end());
  for (size_t i = 1; i < pool->inputs().size(); ++i) inputs.push_back(pool->input(i));
  Node* fused = g.create(conv2d_max_pool2d_symbol(), inputs, 1);
  fused->insertBefore(pool);
  fused->output()->setType(pool->output()->type());
  pool->output()->replaceAllUsesWith(fused->output());
  pool->destroy();
  conv->destroy();
  return true;
}

}  // namespace

void inline_calls(Graph& graph) {
  for (int depth = 0; depth < 64 && has_calls(graph.block()); ++depth) torch::jit::Inline(graph);
}

ForwardGraph::ForwardGraph(const torch::jit::Module& module) {
  auto graph = module.get_method("forward").graph()->copy();
  inline_calls(*graph);
  // Folds the `if inplace:` of every inlined F.relu call, so the relu is a node the rewrite can see.
  torch::jit::ConstantPropagation(graph, /*ignore_custom_classes=*/true);
  std::vector<Node*> pools, convs, own_pools;
  find_nodes(graph->block(), c10::Symbol::fromQualString("aten::max_pool2d"), pools);
  for (Node* pool : pools) {
    if (move_relu_after(*graph, pool)) ++rewrites_.relu_after_pool;
    use_own(*graph, pool, max_pool2d_symbol());
    ++rewrites_.own_max_pool;
  }
  find_nodes(graph->block(), c10::Symbol::fromQualString("aten::conv2d"), convs);
  for (Node* conv : convs) {
    // Only the overload with numeric padding: conv2d.padding (padding="same" / "valid") stays ATen's.
    if (!conv->matches(kAtenConv2d)) continue;
    use_own(*graph, conv, conv2d_symbol());
    ++rewrites_.own_conv2d;
  }
  find_nodes(graph->block(), max_pool2d_symbol(), own_pools);
  for (Node* pool : own_pools) {
    if (fuse_conv_pool(*graph, pool)) ++rewrites_.conv_pool;
  }
  torch::jit::EliminateDeadCode(graph);
  graph->lint();
  function_ = std::make_shared<torch::jit::GraphFunction>("bulwark_forward", graph, nullptr);
}

torch::Tensor ForwardGraph::operator()(const torch::jit::Module& module, const torch::Tensor& x) const {
  torch::jit::Stack stack{module._ivalue(), x};
  function_->run(stack);
  return stack.back().toTensor();
}

}  // namespace bulwark::model
