#include "model/window_forward.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/csrc/jit/api/function_impl.h>
#include <torch/csrc/jit/ir/ir.h>
#include <torch/torch.h>

#include <algorithm>
#include <unordered_map>

#include "model/forward_graph.h"

namespace bulwark::model {

using torch::jit::Node;
using torch::jit::Value;

// One layer of the chain: a convolution or a max-pool, with the ReLU that follows it folded in.
struct WindowForward::Layer {
  enum class Kind { kConv, kMaxPool };
  Kind kind = Kind::kConv;
  torch::Tensor weight, bias;  // kConv; bias may be undefined
  int64_t kernel[2] = {1, 1}, stride[2] = {1, 1}, pad[2] = {0, 0};
  int64_t groups = 1;
  bool relu = false;
  int64_t in_size[2] = {0, 0}, out_size[2] = {0, 0};  // H, W

  // Output indices [first, last) along dim d (0: rows, 1: columns) that read input [a, b).
  std::pair<int64_t, int64_t> reached(int d, int64_t a, int64_t b) const {
    // Output o reads input [o*stride - pad, o*stride - pad + kernel).
    const int64_t lo = std::max<int64_t>(0, ceil_div(a + pad[d] - kernel[d] + 1, stride[d]));
    const int64_t hi = std::min<int64_t>(out_size[d], floor_div(b - 1 + pad[d], stride[d]) + 1);
    return {lo, std::max(lo, hi)};
  }

  // The layer over a slice of its input that spans, with implicit zero padding, exactly what
  // outputs `out` read. `in` holds input rows/columns [from, to) of the window's extent.
  torch::Tensor apply(const torch::Tensor& in, const Window& in_win, const Window& out) const {
    const int64_t need_top = out.top * stride[0] - pad[0];
    const int64_t need_left = out.left * stride[1] - pad[1];
    const int64_t need_bottom = (out.top + out.height - 1) * stride[0] - pad[0] + kernel[0];
    const int64_t need_right = (out.left + out.width - 1) * stride[1] - pad[1] + kernel[1];
    // in_win is the needed span clamped to the input; the rest is the layer's zero padding.
    torch::Tensor x = in;
    const int64_t pt = in_win.top - need_top, pl = in_win.left - need_left;
    const int64_t pb = need_bottom - (in_win.top + in_win.height), pr = need_right - (in_win.left + in_win.width);
    if (pt || pl || pb || pr) x = torch::constant_pad_nd(x, {pl, pr, pt, pb}, 0);
    return run(x, false);
  }

  // The whole input, with the layer's own padding.
  torch::Tensor apply_full(const torch::Tensor& x) const { return run(x, true); }

  // The layer over x, with its padding or (already padded by the caller) without.
  torch::Tensor run(const torch::Tensor& x, bool padded) const {
    const std::vector<int64_t> st{stride[0], stride[1]}, k{kernel[0], kernel[1]}, one{1, 1};
    const std::vector<int64_t> p = padded ? std::vector<int64_t>{pad[0], pad[1]} : std::vector<int64_t>{0, 0};
    torch::Tensor y = kind == Kind::kConv ? at::conv2d(x, weight, bias, at::IntArrayRef(st), at::IntArrayRef(p),
                                                       at::IntArrayRef(one), groups)
                                          : at::max_pool2d(x, at::IntArrayRef(k), at::IntArrayRef(st));
    if (relu) y.relu_();
    return y;
  }

  static int64_t floor_div(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }
  static int64_t ceil_div(int64_t a, int64_t b) { return -floor_div(-a, b); }
};

namespace {

torch::Tensor narrow(const torch::Tensor& t, const Window& w) {
  return t.narrow(2, w.top, w.height).narrow(3, w.left, w.width);
}

std::vector<int64_t> int_list(Value* v) {
  auto iv = torch::jit::toIValue(v);
  if (!iv || !iv->isIntList()) throw std::runtime_error("not a constant int list");
  return iv->toIntVector();
}

torch::Tensor const_tensor(Value* v, bool optional) {
  auto iv = torch::jit::toIValue(v);
  if (!iv) throw std::runtime_error("not a constant");
  if (iv->isNone() && optional) return {};
  if (!iv->isTensor()) throw std::runtime_error("not a tensor");
  return iv->toTensor();
}

// A constant int's value, or 0 when the value is not one.
int64_t const_int(Value* v) {
  auto iv = torch::jit::toIValue(v);
  return iv && iv->isInt() ? iv->toInt() : 0;
}

int64_t pair_at(const std::vector<int64_t>& v, int d) {
  if (v.size() == 1) return v[0];
  if (v.size() != 2) throw std::runtime_error("not a 2-D parameter");
  return v[static_cast<size_t>(d)];
}

// The chain's layers from a frozen forward graph, and the tail after it as its own graph.
// Throws runtime_error when the graph is not such a chain.
void parse(torch::jit::Graph& graph, std::vector<WindowForward::Layer>& layers, torch::Tensor& head_weight,
           torch::Tensor& head_bias, std::shared_ptr<torch::jit::Graph>& tail) {
  using WL = WindowForward::Layer;
  if (graph.inputs().size() != 2 || graph.outputs().size() != 1) throw std::runtime_error("not forward(self, x)");
  Value* current = graph.inputs()[1];
  Node* head_linear = nullptr;
  std::vector<Node*> tail_nodes;
  bool in_chain = true;
  for (Node* n : graph.nodes()) {
    if (n->kind() == c10::prim::Constant) continue;
    const bool reads_current = n->inputs().size() > 0 && n->input(0) == current && current->uses().size() == 1;
    if (in_chain && reads_current) {
      const auto kind = n->kind();
      if (kind == c10::aten::relu || kind == c10::aten::relu_) {
        if (layers.empty() || layers.back().relu) throw std::runtime_error("relu not after a layer");
        layers.back().relu = true;
        current = n->output();
        continue;
      }
      if (kind == c10::aten::conv2d && n->inputs().size() == 7) {
        WL l;
        l.kind = WL::Kind::kConv;
        l.weight = const_tensor(n->input(1), false);
        if (l.weight.dim() != 4) throw std::runtime_error("not a 2-D convolution");
        l.weight = l.weight.contiguous(at::MemoryFormat::ChannelsLast);  // outputs in channels-last
        l.bias = const_tensor(n->input(2), true);
        const auto stride = int_list(n->input(3)), pad = int_list(n->input(4)), dil = int_list(n->input(5));
        for (int d = 0; d < 2; ++d) {
          if (pair_at(dil, d) != 1) throw std::runtime_error("dilated convolution");
          l.stride[d] = pair_at(stride, d);
          l.pad[d] = pair_at(pad, d);
          l.kernel[d] = l.weight.size(2 + d);
        }
        l.groups = torch::jit::toIValue(n->input(6)).value().toInt();
        layers.push_back(std::move(l));
        current = n->output();
        continue;
      }
      if (kind == c10::aten::max_pool2d && n->inputs().size() == 6) {
        WL l;
        l.kind = WL::Kind::kMaxPool;
        const auto kernel = int_list(n->input(1)), stride = int_list(n->input(2)), pad = int_list(n->input(3)),
                   dil = int_list(n->input(4));
        if (torch::jit::toIValue(n->input(5)).value().toBool()) throw std::runtime_error("ceil_mode pool");
        for (int d = 0; d < 2; ++d) {
          l.kernel[d] = pair_at(kernel, d);
          l.stride[d] = stride.empty() ? l.kernel[d] : pair_at(stride, d);
          if (pair_at(pad, d) != 0 || pair_at(dil, d) != 1) throw std::runtime_error("padded or dilated pool");
        }
        layers.push_back(std::move(l));
        current = n->output();
        continue;
      }
    }
    // The chain's end: flatten(x, 1) then a linear layer over it is the head, run incrementally too.
    if (in_chain && reads_current && !layers.empty() && n->kind() == c10::aten::flatten && n->inputs().size() == 3 &&
        const_int(n->input(1)) == 1 && const_int(n->input(2)) == -1 && n->output()->uses().size() == 1) {
      Node* lin = n->output()->uses()[0].user;
      const auto w = lin->inputs().size() == 3 ? torch::jit::toIValue(lin->input(1)) : c10::nullopt;
      if (lin->kind() == c10::aten::linear && lin->input(0) == n->output() && w && w->isTensor() &&
          w->toTensor().dim() == 2) {
        head_weight = w->toTensor();
        head_bias = const_tensor(lin->input(2), true);
        head_linear = lin;
        current = lin->output();
        in_chain = false;
        continue;
      }
    }
    if (n == head_linear) continue;
    in_chain = false;
    tail_nodes.push_back(n);
  }
  if (std::none_of(layers.begin(), layers.end(), [](const WL& l) { return l.kind == WL::Kind::kConv; })) {
    throw std::runtime_error("no convolution");
  }
  // The tail, as a graph of its own whose input is the chain's (or the head's) output.
  tail = std::make_shared<torch::jit::Graph>();
  std::unordered_map<Value*, Value*> env;
  env[current] = tail->addInput("x");
  std::function<Value*(Value*)> lookup = [&](Value* v) -> Value* {
    auto it = env.find(v);
    if (it != env.end()) return it->second;
    if (v->node()->kind() != c10::prim::Constant) throw std::runtime_error("the tail reads the chain's inside");
    Node* c = tail->insertNode(tail->createClone(v->node(), lookup));
    env[v] = c->output();
    return c->output();
  };
  for (Node* n : tail_nodes) {
    Node* c = tail->insertNode(tail->createClone(n, lookup));
    for (size_t i = 0; i < n->outputs().size(); ++i) env[n->outputs()[i]] = c->outputs()[i];
  }
  tail->registerOutput(lookup(graph.outputs()[0]));
  tail->lint();
}

}  // namespace

WindowForward::~WindowForward() = default;

size_t WindowForward::window_layers() const { return layers_.size(); }

std::unique_ptr<WindowForward> WindowForward::create(const Model& m, int64_t max_images) {
  const auto& shape = m.spec().input_shape;
  if (shape.size() != 3 || max_images < 1) return nullptr;
  std::unique_ptr<WindowForward> out(new WindowForward());
  try {
    torch::NoGradGuard no_grad;
    Model copy_of(m);
    auto copy = copy_of.module().clone();
    inline_calls(*copy.get_method("forward").graph());
    for (auto sub : copy.modules()) {
      if (sub.hasattr("training")) sub.setattr("training", false);
    }
    // optimize_numerics folds BatchNorm into the convolution before it, which keeps the chain going.
    auto frozen = torch::jit::freeze(copy, c10::nullopt, /*optimize_numerics=*/true);
    std::shared_ptr<torch::jit::Graph> tail;
    parse(*frozen.get_method("forward").graph(), out->layers_, out->head_weight_, out->head_bias_, tail);
    out->tail_ = std::make_shared<torch::jit::GraphFunction>("bulwark_window_tail", tail, nullptr);
    // Shapes through the chain, and what its cache costs.
    int64_t c = shape[0], h = shape[1], w = shape[2];
    for (auto& l : out->layers_) {
      l.in_size[0] = h;
      l.in_size[1] = w;
      if (l.kind == Layer::Kind::kConv) {
        if (l.weight.size(1) * l.groups != c) return nullptr;
        c = l.weight.size(0);
      }
      h = (h + 2 * l.pad[0] - l.kernel[0]) / l.stride[0] + 1;
      w = (w + 2 * l.pad[1] - l.kernel[1]) / l.stride[1] + 1;
      if (h <= 0 || w <= 0) return nullptr;
      l.out_size[0] = h;
      l.out_size[1] = w;
      out->cache_bytes_per_image_ += c * h * w * static_cast<int64_t>(sizeof(float));
    }
    if (out->head_weight_.defined()) {
      if (out->head_weight_.size(1) != c * h * w) return nullptr;
      // Its columns in the cache's order (channels last): a window's columns are runs of width x C.
      out->head_weight_hwc_ = out->head_weight_.reshape({-1, c, h, w}).permute({0, 2, 3, 1}).contiguous();
      out->cache_bytes_per_image_ += out->head_weight_.size(0) * static_cast<int64_t>(sizeof(float));
    }
    if (out->cache_bytes_per_image_ * max_images > kMaxCacheBytes) return nullptr;

    // Self-check: the full pass, a query, an accept and a query on fewer rows agree with the
    // model's own forward.
    auto gen = at::make_generator<at::CPUGeneratorImpl>(7);
    const auto base = torch::rand({3, shape[0], shape[1], shape[2]}, gen);
    EvalMode eval(m);
    const auto agree = [&](const torch::Tensor& a, const torch::Tensor& b) {
      return a.sizes() == b.sizes() && (a - b).abs().max().item<double>() <= 1e-4 * (1 + b.abs().max().item<double>());
    };
    if (!agree(out->reset(base), m.logits(base))) return nullptr;
    const Window win{shape[1] / 3, shape[2] / 2, std::min<int64_t>(3, shape[1]), std::min<int64_t>(2, shape[2])};
    auto x = base.clone();
    narrow(x, win).uniform_(0, 1, gen);
    if (!agree(out->query(torch::arange(3), x, win), m.logits(x))) return nullptr;
    out->accept(torch::tensor({false, true, true}));
    const auto rows = torch::tensor({int64_t{0}, int64_t{2}});
    auto after = x.index_select(0, rows);
    after[0] = base[0];
    const Window all{0, 0, shape[1], shape[2]};
    narrow(after, Window{0, 0, 1, 1}).uniform_(0, 1, gen);
    if (!agree(out->query(rows, after, Window{0, 0, 1, 1}), m.logits(after))) return nullptr;
    if (!agree(out->query(rows, after, all), m.logits(after))) return nullptr;
  } catch (const std::exception&) {
    return nullptr;
  }
  return out;
}

torch::Tensor WindowForward::head(const torch::Tensor& last) const {
  return torch::nn::functional::linear(last.flatten(1), head_weight_, head_bias_);
}

torch::Tensor WindowForward::reset(const torch::Tensor& base) {
  torch::NoGradGuard no_grad;
  cache_.clear();
  new_values_.clear();
  regions_.clear();
  base_rows_ = base.size(0);
  rows_ = torch::arange(base_rows_);
  accepts_since_refresh_ = 0;
  torch::Tensor a = base.contiguous(at::MemoryFormat::ChannelsLast);
  for (const auto& l : layers_) {
    a = l.apply_full(a);
    cache_.push_back(a);
  }
  if (head_weight_.defined()) a = head_out_ = head(a);
  torch::jit::Stack stack{a};
  tail_->run(stack);
  return stack.back().toTensor();
}

// Drops from the cache the rows not in `rows` (a subset of the rows it holds).
void WindowForward::keep_rows(const torch::Tensor& rows) {
  if (rows.numel() == rows_.numel() && torch::equal(rows, rows_)) return;
  auto position = torch::full({base_rows_}, -1, torch::kLong);
  position.index_put_({rows_}, torch::arange(rows_.numel()));
  const auto keep = position.index_select(0, rows);
  if (keep.numel() > 0 && keep.min().item<int64_t>() < 0) {
    throw std::logic_error("WindowForward::query: rows outside the cached ones");
  }
  for (auto& c : cache_) c = c.index_select(0, keep);
  if (head_out_.defined()) head_out_ = head_out_.index_select(0, keep);
  rows_ = rows.clone();
}

torch::Tensor WindowForward::query(const torch::Tensor& rows, const torch::Tensor& x, const Window& changed) {
  torch::NoGradGuard no_grad;
  keep_rows(rows);
  new_values_.assign(layers_.size(), torch::Tensor());
  regions_.assign(layers_.size(), Window{});
  Window in_region = changed;  // where the current layer's input differs from the base's
  torch::Tensor in_values;     // that region's values (undefined for the first layer: x has them)
  for (size_t i = 0; i < layers_.size(); ++i) {
    const Layer& l = layers_[i];
    const auto [top, bottom] = l.reached(0, in_region.top, in_region.top + in_region.height);
    const auto [left, right] = l.reached(1, in_region.left, in_region.left + in_region.width);
    const Window out{top, left, bottom - top, right - left};
    if (out.height == 0 || out.width == 0) break;  // the window reaches no output: the rest is the base's
    // The input span those outputs read, clamped to the input (the rest is zero padding).
    const int64_t t0 = std::max<int64_t>(0, top * l.stride[0] - l.pad[0]);
    const int64_t l0 = std::max<int64_t>(0, left * l.stride[1] - l.pad[1]);
    const int64_t t1 = std::min(l.in_size[0], (bottom - 1) * l.stride[0] - l.pad[0] + l.kernel[0]);
    const int64_t l1 = std::min(l.in_size[1], (right - 1) * l.stride[1] - l.pad[1] + l.kernel[1]);
    const Window span{t0, l0, t1 - t0, l1 - l0};
    torch::Tensor in;
    if (i == 0) {
      in = narrow(x, span).contiguous(at::MemoryFormat::ChannelsLast);
    } else {
      // The changed region, where it lies in the span (a pool may leave the input's last rows unread).
      const int64_t ct = std::max(in_region.top, t0), cl = std::max(in_region.left, l0);
      const int64_t cb = std::min(in_region.top + in_region.height, t1);
      const int64_t cr = std::min(in_region.left + in_region.width, l1);
      in = narrow(cache_[i - 1], span).clone(at::MemoryFormat::ChannelsLast);  // a copy: contiguous() of the whole would alias the cache
      narrow(in, Window{ct - t0, cl - l0, cb - ct, cr - cl})
          .copy_(narrow(in_values, Window{ct - in_region.top, cl - in_region.left, cb - ct, cr - cl}));
    }
    in_values = l.apply(in, span, out);
    new_values_[i] = in_values;
    regions_[i] = out;
    in_region = out;
  }
  const bool reached = new_values_.back().defined();
  torch::Tensor a;
  if (head_weight_.defined()) {
    if (reached) {
      // The head's output moves by its weight's columns over the region times the region's change.
      const Window& r = regions_.back();
      const auto change = (new_values_.back() - narrow(cache_.back(), r)).permute({0, 2, 3, 1}).flatten(1);
      const auto columns =
          head_weight_hwc_.narrow(1, r.top, r.height).narrow(2, r.left, r.width).reshape({head_weight_hwc_.size(0), -1});
      new_head_out_ = head_out_ + torch::mm(change, columns.t());
    } else {
      new_head_out_ = head_out_.clone();
    }
    a = new_head_out_;
  } else {
    a = cache_.back().clone();
    if (reached) narrow(a, regions_.back()).copy_(new_values_.back());
  }
  torch::jit::Stack stack{a};
  tail_->run(stack);
  return stack.back().toTensor();
}

void WindowForward::accept(const torch::Tensor& take) {
  torch::NoGradGuard no_grad;
  if (!take.any().item<bool>()) return;
  const auto take4 = take.view({-1, 1, 1, 1});
  for (size_t i = 0; i < layers_.size(); ++i) {
    if (!new_values_[i].defined()) break;
    auto region = narrow(cache_[i], regions_[i]);
    region.copy_(torch::where(take4, new_values_[i], region));
  }
  if (head_weight_.defined()) {
    if (++accepts_since_refresh_ >= kHeadRefreshEvery) {
      head_out_ = head(cache_.back());
      accepts_since_refresh_ = 0;
    } else {
      head_out_ = torch::where(take.view({-1, 1}), new_head_out_, head_out_);
    }
  }
}

}  // namespace bulwark::model
