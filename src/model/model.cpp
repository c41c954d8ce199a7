#include "model/model.h"

#include <torch/torch.h>

#include <torch/csrc/jit/api/function_impl.h>
#include <torch/csrc/jit/passes/dead_code_elimination.h>
#include <torch/csrc/jit/python/update_graph_executor_opt.h>

#include <mutex>
#include <optional>
#include <sstream>

#include "core/error.h"
#include "core/files.h"
#include "model/forward_graph.h"

namespace bulwark::model {
namespace {

std::string first_line(const std::string& s) {
  const auto nl = s.find('\n');
  return nl == std::string::npos ? s : s.substr(0, nl);
}

std::string shape_string(at::IntArrayRef dims) {
  std::string out = "[";
  for (size_t i = 0; i < dims.size(); ++i) out += (i ? ", " : "") + std::to_string(dims[i]);
  return out + "]";
}

// A probe forward in eval mode (the caller set it): the module must take [2, C, H, W] and return
// logits [2, classes].
int64_t probe_classes(torch::jit::Module& module, const ModelSpec& spec, const std::string& path) {
  torch::NoGradGuard no_grad;  // not InferenceMode: a TorchScript module run under it cannot train afterwards
  const auto& s = spec.input_shape;
  torch::Tensor x = torch::full({2, s[0], s[1], s[2]}, 0.5f * (spec.lo + spec.hi));
  if (spec.normalises()) {
    x = (x - torch::tensor(spec.mean).view({1, -1, 1, 1})) / torch::tensor(spec.std).view({1, -1, 1, 1});
  }
  torch::Tensor out;
  try {
    out = module.forward({x}).toTensor();
  } catch (const std::exception& e) {
    throw data_format(path + ": does not accept an input " + shape_string(x.sizes()) + " (--input-shape " +
                      std::to_string(s[0]) + "," + std::to_string(s[1]) + "," + std::to_string(s[2]) +
                      "): " + first_line(e.what()));
  }
  if (out.dim() != 2 || out.size(0) != 2) {
    throw data_format(path + ": forward() must return logits [N, classes], returned " + shape_string(out.sizes()) +
                      " for an input of 2 images");
  }
  return out.size(1);
}

// For a module without a `features` method (a model from PyTorch): the input of the linear layer
// whose output forward() returns — the penultimate features feature detectors (Mahalanobis) read —
// added as `features`. forward's graph is copied with its calls inlined and cut before that layer.
// A forward that does not end in aten::linear gets nothing (and such a model has no features()).
void add_derived_features(torch::jit::Module& module) {
  try {
    auto graph = module.get_method("forward").graph()->copy();
    inline_calls(*graph);  // torchvision's forward calls _forward_impl, which calls fc
    if (graph->outputs().size() != 1) return;
    torch::jit::Node* last = graph->outputs()[0]->node();
    if (last->kind() != c10::Symbol::fromQualString("aten::linear")) return;
    torch::jit::Value* features = last->inputs()[0];
    graph->eraseOutput(0);
    graph->registerOutput(features);
    torch::jit::EliminateDeadCode(graph);
    const auto type = module.type();
    auto* fn = module._ivalue()->compilation_unit()->create_function(
        c10::QualifiedName(*type->name(), "features"), graph);
    type->addMethod(fn);
  } catch (const std::exception&) {
    // An unusual graph: the model simply has no features().
  }
}

// The dotted path of the submodule `v` names: a chain of prim::GetAttr from the graph's self
// ("" for self itself); nullopt for any other value.
std::optional<std::string> submodule_path(torch::jit::Value* v, torch::jit::Value* self) {
  std::vector<std::string> parts;
  while (v != self) {
    torch::jit::Node* n = v->node();
    if (n->kind() != c10::prim::GetAttr) return std::nullopt;
    parts.push_back(n->s(c10::attr::name));
    v = n->input(0);
  }
  std::string path;
  for (auto it = parts.rbegin(); it != parts.rend(); ++it) path += (path.empty() ? "" : ".") + *it;
  return path;
}

// `features` for --feature-layer NAME: forward's graph copied, the calls on the way to submodule
// NAME inlined (methods of self, and the forward of each module NAME lies inside), and cut at the
// output of NAME's forward. Throws invalid_argument naming the layers there are when forward()
// never calls NAME (or calls it only inside a branch or loop) or it returns no tensor.
void add_layer_features(torch::jit::Module& module, const std::string& layer) {
  auto graph = module.get_method("forward").graph()->copy();
  torch::jit::Value* self = graph->inputs()[0];
  torch::jit::Value* found = nullptr;
  for (int round = 0; round < 256 && !found; ++round) {
    torch::jit::Node* inline_me = nullptr;
    for (torch::jit::Node* n : graph->nodes()) {
      if (n->kind() != c10::prim::CallMethod) continue;
      const auto path = submodule_path(n->input(0), self);
      if (!path) continue;
      const bool is_forward = n->s(c10::attr::name) == "forward";
      if (is_forward && *path == layer) {
        found = n->output();
        break;
      }
      if (path->empty() || (is_forward && layer.rfind(*path + ".", 0) == 0)) {
        inline_me = n;
        break;
      }
    }
    if (found || !inline_me) break;
    auto cls = inline_me->input(0)->type()->expect<c10::ClassType>();
    auto* fn = torch::jit::tryToGraphFunction(cls->getMethod(inline_me->s(c10::attr::name)));
    if (!fn) break;
    torch::jit::inlineCallTo(inline_me, fn);
  }
  if (!found || !found->type()->cast<c10::TensorType>()) {
    std::string names;
    for (const auto& child : module.named_children()) names += (names.empty() ? "" : ", ") + child.name;
    throw invalid_argument("--feature-layer " + layer + ": forward() " +
                           (found ? "gets no tensor from it" : "never calls a submodule of that name") +
                           " (the model's top-level submodules: " + names + "; name a nested one as layer4.1)");
  }
  graph->eraseOutput(0);
  graph->registerOutput(found);
  torch::jit::EliminateDeadCode(graph);
  const auto type = module.type();
  auto* fn = module._ivalue()->compilation_unit()->create_function(c10::QualifiedName(*type->name(), "features"), graph);
  type->addMethod(fn);
}

void check_fits(const std::vector<torch::Tensor>& model, const std::vector<torch::Tensor>& saved, const char* what) {
  bool fits = model.size() == saved.size();
  for (size_t i = 0; fits && i < model.size(); ++i) fits = model[i].sizes().equals(saved[i].sizes());
  if (!fits) throw invalid_argument(std::string("checkpoint does not match the model's ") + what);
}

// TorchScript's optimizing executor profiles the first runs, then rewrites the graph into
// differentiable subgraphs; on CPU that made training ~10% slower than plain LibTorch and the
// first calls slower still (bench/train_throughput). The plain interpreter runs the same ops.
// This is a process-wide LibTorch setting, set once before any module runs.
void use_plain_interpreter() {
  static std::once_flag once;
  std::call_once(once, [] { torch::jit::setGraphExecutorOptimize(false); });
}

}  // namespace

Model::Model(torch::jit::Module module, ModelSpec spec) : module_(std::move(module)), spec_(std::move(spec)) {
  use_plain_interpreter();
  // A saved model keeps the features() derived when it was imported.
  if (spec_.arch == "torchscript" && !module_.find_method("features")) {
    if (spec_.feature_layer.empty()) add_derived_features(module_);
    else add_layer_features(module_, spec_.feature_layer);
  }
  has_features_ = module_.find_method("features").has_value();
  // Only zoo models are known to compute forward() as that linear head; an imported module with
  // the same attribute names may not.
  linear_head_ = has_features_ && spec_.arch != "torchscript" && module_.hasattr("head_weight") &&
                 module_.hasattr("head_bias");
  if (spec_.normalises()) {
    mean_ = torch::tensor(spec_.mean).view({1, -1, 1, 1});
    std_ = torch::tensor(spec_.std).view({1, -1, 1, 1});
  }
  use_forward_graph(true);
}

void Model::use_forward_graph(bool on) {
  forward_graph_.reset();
  if (!on) return;
  try {
    auto graph = std::make_shared<const ForwardGraph>(module_);
    if (graph->rewrites().total() > 0) forward_graph_ = std::move(graph);
  } catch (const std::exception&) {
    // A graph the rewrite cannot take (unusual control flow, a forward with more arguments): the
    // module's own forward runs, as it always did.
  }
}

namespace {

// `load` reads the archive from `path` or, when `bytes` is given, from memory; a sidecar is read
// only for a file.
Model load_archive(const std::string& path, const std::string* bytes) {
  if (bytes == nullptr && !file_exists(path)) throw not_found(path + ": no such model file");
  std::unordered_map<std::string, std::string> extra{{kSpecExtraFile, ""}};
  use_plain_interpreter();
  torch::jit::Module module;
  try {
    if (bytes != nullptr) {
      std::istringstream in(*bytes);
      module = torch::jit::load(in, torch::kCPU, extra);
    } else {
      module = torch::jit::load(path, torch::kCPU, extra);
    }
  } catch (const std::exception& e) {
    throw data_format(path + ": not a loadable TorchScript archive (" + first_line(e.what()) + ")");
  }
  if (!module.find_method("forward")) throw data_format(path + ": TorchScript module has no forward()");
  std::string spec_text = extra[kSpecExtraFile];
  const std::string sidecar = path + ".json";
  if (bytes == nullptr && spec_text.empty() && file_exists(sidecar)) spec_text = read_file(sidecar);
  if (bytes != nullptr && spec_text.empty()) {
    throw data_format(path + ": the archive has no Bulwark spec inside it, and a signed model's spec must be: a "
                      "file beside it is not covered by the signature; write the spec in with bulwark import "
                      "and register that file");
  }
  module.eval();  // before the probe below: in train mode it would update BatchNorm statistics
  ModelSpec spec;
  if (spec_text.empty()) {
    throw data_format(path + ": has no Bulwark spec (input shape, normalisation, classes), and Bulwark does not "
                      "guess one; write it in with: bulwark import " + path +
                      " --input-shape C,H,W [--mean ... --std ...] [--classes FILE | --data DIR] --out MODEL.bulwark.pt");
  } else {
    const auto j = nlohmann::json::parse(spec_text, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded()) throw data_format(path + ": spec (bulwark.json) is not valid JSON");
    spec = ModelSpec::from_json(j, path);
  }
  return Model(std::move(module), std::move(spec));
}

}  // namespace

Model Model::load(const std::string& path) { return load_archive(path, nullptr); }

Model Model::from_bytes(const std::string& bytes, const std::string& origin) { return load_archive(origin, &bytes); }

Model Model::import_torchscript(const std::string& path, ModelSpec spec) {
  if (!file_exists(path)) throw not_found(path + ": no such model file");
  use_plain_interpreter();
  torch::jit::Module module;
  try {
    module = torch::jit::load(path, torch::kCPU);
  } catch (const std::exception& e) {
    throw data_format(path + ": not a loadable TorchScript archive (" + first_line(e.what()) +
                      "); export it with torch.jit.script or torch.jit.trace and save it");
  }
  if (!module.find_method("forward")) throw data_format(path + ": TorchScript module has no forward()");
  if (!spec.feature_layer.empty() && module.find_method("features")) {
    throw invalid_argument("--feature-layer: " + path + " defines its own features(), which feature detectors read; "
                           "drop the flag, or the method");
  }
  module.eval();  // the probe must not update BatchNorm statistics
  // Checks the spec's own fields (shape, normalisation per channel) before the probe uses them; with
  // no class names given, one placeholder stands in until the probe counts the classes.
  const bool named = !spec.class_names.empty();
  if (!named) spec.class_names = {"0"};
  spec = ModelSpec::from_json(spec.to_json(), path);
  const int64_t classes = probe_classes(module, spec, path);
  if (named && classes != spec.num_classes()) {
    throw data_format(path + ": returns " + std::to_string(classes) + " logits per image but " +
                      std::to_string(spec.num_classes()) + " class names were given");
  }
  if (!named) {
    spec.class_names.clear();
    for (int64_t i = 0; i < classes; ++i) spec.class_names.push_back(std::to_string(i));
  }
  return Model(std::move(module), std::move(spec));
}

void Model::save(const std::string& path) const {
  // Saved in eval mode, as deployed: a consumer that calls forward() (torch.jit.load in Python, a
  // TorchScript server) gets BatchNorm's running statistics, not the batch's.
  EvalMode eval(*this);
  std::ostringstream bytes;
  torch::jit::ExtraFilesMap extra{{kSpecExtraFile, spec_.to_json().dump(2)}};
  module_.save(bytes, extra);
  atomic_write_file(path, bytes.str());
}

Model Model::clone() const {
  // Copied without autograd history, so the copy's parameters are leaves an optimizer can own.
  torch::jit::Module copy;
  {
    torch::NoGradGuard no_grad;
    copy = module_.deepcopy();
  }
  auto src = module_.parameters().begin();
  for (auto p : copy.parameters()) p.requires_grad_((*src++).requires_grad());
  return Model(std::move(copy), spec_);
}

void Model::check_input(const torch::Tensor& x) const {
  const auto& s = spec_.input_shape;
  if (x.dim() != 4 || x.size(1) != s[0] || x.size(2) != s[1] || x.size(3) != s[2]) {
    throw invalid_argument("input shape " + shape_string(x.sizes()) + " does not match the model's [N, " +
                           std::to_string(s[0]) + ", " + std::to_string(s[1]) + ", " + std::to_string(s[2]) + "]");
  }
}

torch::Tensor Model::normalise(const torch::Tensor& x) const {
  if (!spec_.normalises()) return x;
  // Autograd flows through: attacks take gradients in pixel space.
  return (x - mean_) / std_;
}

torch::Tensor Model::logits(const torch::Tensor& x) const {
  const torch::Tensor in = normalise(x);
  if (forward_graph_) return (*forward_graph_)(module_, in);
  return const_cast<torch::jit::Module&>(module_).forward({in}).toTensor();
}

int Model::forward_graph_rewrites() const { return forward_graph_ ? forward_graph_->rewrites().total() : 0; }

bool Model::has_features() const { return has_features_; }

torch::Tensor Model::features(const torch::Tensor& x) const {
  if (!has_features_) throw invalid_argument("model '" + spec_.arch + "' does not expose features()");
  return const_cast<torch::jit::Module&>(module_).run_method("features", normalise(x)).toTensor();
}

std::pair<torch::Tensor, torch::Tensor> Model::logits_and_features(const torch::Tensor& x) const {
  if (!has_features_) return {logits(x), torch::Tensor()};
  auto f = features(x);
  if (!linear_head_) return {logits(x), f};
  auto& m = const_cast<torch::jit::Module&>(module_);
  auto z = torch::linear(f, m.attr("head_weight").toTensor(), m.attr("head_bias").toTensor());
  return {z, f};
}

torch::Tensor Model::predict_logits(const torch::Tensor& x, int64_t batch_size) const {
  torch::NoGradGuard no_grad;  // not InferenceMode: a TorchScript module run under it cannot train afterwards
  EvalMode eval(*this);
  std::vector<torch::Tensor> parts;
  for (int64_t start = 0; start < x.size(0); start += batch_size) {
    parts.push_back(logits(x.narrow(0, start, std::min(batch_size, x.size(0) - start))));
  }
  return parts.empty() ? torch::empty({0, spec_.num_classes()}) : torch::cat(parts);
}

std::vector<torch::Tensor> Model::parameters() const {
  std::vector<torch::Tensor> out;
  for (const auto& p : module_.parameters()) out.push_back(p);
  return out;
}

ModelState Model::snapshot() const {
  ModelState out;
  for (const auto& p : module_.parameters()) out.parameters.push_back(p.detach().clone());
  for (const auto& b : module_.buffers()) out.buffers.push_back(b.detach().clone());
  return out;
}

void Model::restore(const ModelState& saved) {
  torch::NoGradGuard no_grad;
  const auto params = parameters();
  std::vector<torch::Tensor> buffers;
  for (const auto& b : module_.buffers()) buffers.push_back(b);
  // Both checked before anything is written: a checkpoint that does not fit changes nothing.
  check_fits(params, saved.parameters, "parameters");
  check_fits(buffers, saved.buffers, "buffers");
  for (size_t i = 0; i < params.size(); ++i) params[i].copy_(saved.parameters[i]);
  for (size_t i = 0; i < buffers.size(); ++i) buffers[i].copy_(saved.buffers[i]);
}

int64_t Model::parameter_count() const {
  int64_t n = 0;
  for (const auto& p : module_.parameters()) n += p.numel();
  return n;
}

void Model::set_training(bool on) { on ? module_.train() : module_.eval(); }

void Model::set_parameters_require_grad(bool on) {
  for (auto p : module_.parameters()) p.requires_grad_(on);
}

torch::Tensor channels_last(const torch::Tensor& x) {
  if (x.dim() != 4 || x.suggest_memory_format() == at::MemoryFormat::ChannelsLast) return x;
  // empty() + copy_, not contiguous(ChannelsLast): that keeps a tensor whose strides already satisfy
  // both layouts (one channel), and such strides read as NCHW.
  auto out = at::empty(x.sizes(), x.options().memory_format(at::MemoryFormat::ChannelsLast));
  out.copy_(x);
  return out;
}

void Model::set_channels_last(bool on) {
  torch::NoGradGuard no_grad;
  const auto format = on ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  auto relayout = [format](torch::Tensor t) {
    if (t.dim() != 4 || !t.device().is_cpu()) return;
    // empty() + copy_, as channels_last(): one input channel's strides satisfy both layouts.
    auto out = at::empty(t.sizes(), t.options().memory_format(format));
    out.copy_(t);
    t.set_data(out);
  };
  for (const auto& p : module_.parameters()) relayout(p);
  for (const auto& b : module_.buffers()) relayout(b);
}

EvalMode::EvalMode(const Model& m) {
  for (auto sub : m.module_.modules()) {
    // Modules built in C++ (the zoo) may have no flag: nothing in them can read it.
    if (sub.hasattr("training") && sub.is_training()) were_training_.push_back(sub);
  }
  // One module's flag at a time (train(false) would set the whole subtree), so the destructor
  // turns back exactly these.
  for (auto& sub : were_training_) sub.setattr("training", false);
}

EvalMode::~EvalMode() {
  for (auto& sub : were_training_) sub.setattr("training", true);
}

}  // namespace bulwark::model
