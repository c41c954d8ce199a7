// model/model.h — the one Model type everything downstream uses: a TorchScript module plus its
// spec. Zoo models are built as TorchScript too, so what Bulwark saves loads unchanged in
// Python's torch.jit.load and what PyTorch exports loads here.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <torch/script.h>

#include "model/spec.h"

namespace bulwark::model {

class ForwardGraph;

// A checkpoint in memory: detached copies of the parameters and of the buffers (BatchNorm running
// statistics and batch count, ...), each in the module's order. Weights without their buffers
// are not the model that was validated.
struct ModelState {
  std::vector<torch::Tensor> parameters;
  std::vector<torch::Tensor> buffers;
};

// A Model is a handle: copies share parameters (like torch::jit::Module). Use clone() for an
// independent copy. Not thread-safe for training; concurrent logits() calls in eval mode are
// safe (TorchScript's interpreter is re-entrant).
class Model {
 public:
  // Loads a TorchScript archive; its spec comes from the archive, else a "<path>.json" sidecar. An
  // archive with neither is refused with a message naming `bulwark import` (no shape is guessed).
  // Bad files throw naming the path.
  static Model load(const std::string& path);
  // The archive given as its bytes (a signed registry object, read once, hashed and loaded from the
  // same memory: no file is read again between the check and the load); its spec must be inside
  // the archive, as an unsigned "<path>.json" beside a signed object would not be covered by the
  // signature. `origin` names it in errors ("registry:fashion@3").
  static Model from_bytes(const std::string& bytes, const std::string& origin);
  // A TorchScript archive from PyTorch with the spec given here (what `bulwark import` writes in):
  // a probe forward in eval mode checks that it takes [2, C, H, W] and returns [2, classes].
  static Model import_torchscript(const std::string& path, ModelSpec spec);
  // Wraps an already-built module (zoo, tests).
  Model(torch::jit::Module module, ModelSpec spec);

  // Writes the archive (with its spec) atomically, in eval mode (the model's own modes are kept).
  void save(const std::string& path) const;
  Model clone() const;

  // Logits for a float batch [N, C, H, W] of pixels in the spec's range (normalised here by the
  // spec's mean/std when it has them); autograd follows the caller's mode. Runs the module's
  // forward through model/forward_graph.h's exact rewrites when any applies.
  torch::Tensor logits(const torch::Tensor& x) const;
  // How many rewrites that graph holds (0: logits() runs the module's forward as it is).
  int forward_graph_rewrites() const;
  // On by default; off, logits() runs the module's own forward (bench/ measures the two side by side).
  void use_forward_graph(bool on);
  // Penultimate activations, when the module defines a `features` method.
  bool has_features() const;
  torch::Tensor features(const torch::Tensor& x) const;
  // Both in one forward pass when the model's head is a linear layer over features() (zoo models:
  // head_weight, head_bias); otherwise two passes. features is undefined without has_features().
  std::pair<torch::Tensor, torch::Tensor> logits_and_features(const torch::Tensor& x) const;
  // Inference-mode logits over a large tensor, in chunks of `batch_size`, in eval mode (EvalMode).
  torch::Tensor predict_logits(const torch::Tensor& x, int64_t batch_size = 500) const;

  // Throws invalid_argument if x is not [N, C, H, W] matching the spec's input shape.
  void check_input(const torch::Tensor& x) const;

  std::vector<torch::Tensor> parameters() const;
  int64_t parameter_count() const;
  // A checkpoint in memory, and writing it back (throws invalid_argument if it is not this
  // model's, or a clone's).
  ModelState snapshot() const;
  void restore(const ModelState& saved);
  // Every submodule in train (on) or eval mode. Evaluation and attacks use EvalMode instead.
  void set_training(bool on);
  // Attacks freeze parameters so only the input gets a gradient.
  void set_parameters_require_grad(bool on);
  // Every 4-D parameter and buffer (convolution weights) in channels-last strides (on) or in
  // contiguous NCHW strides (off), values unchanged. With channels-last weights oneDNN runs the
  // convolutions in NHWC and their outputs stay NHWC through ReLU and pooling, whose ATen NHWC
  // kernels run ~8x faster than the NCHW ones here (bench/harden profile). Sums then run in
  // another order, so results are equal to rounding, not to the bit. A weight with one input
  // channel gets explicit channels-last strides (its NCHW strides would read as either layout).
  // Training turns it on for its run (train::TrainOptions::channels_last); saved models are NCHW.
  void set_channels_last(bool on);
  // Whether gradient passes (attack::logits_of) run on a channels-last copy of their input: on by
  // default. Off, they run in NCHW and their logits are exact verdicts, as before issue 14:
  // `--nchw` training runs (ChannelsLast with on = false) and bench/'s "before" sides.
  void use_channels_last_gradients(bool on) { channels_last_gradients_ = on; }
  bool channels_last_gradients() const { return channels_last_gradients_; }

  const ModelSpec& spec() const { return spec_; }
  ModelSpec& mutable_spec() { return spec_; }
  torch::jit::Module& module() { return module_; }

 private:
  friend class EvalMode;
  torch::Tensor normalise(const torch::Tensor& x) const;
  torch::jit::Module module_;
  torch::Tensor mean_, std_;  // [1, C, 1, 1] when the spec normalises
  ModelSpec spec_;
  std::shared_ptr<const ForwardGraph> forward_graph_;  // shared by copies, like module_
  bool has_features_ = false;
  bool linear_head_ = false;  // forward(x) == linear(features(x), head_weight, head_bias)
  bool channels_last_gradients_ = true;
};

// RAII: parameters stop requiring grad for the scope (attacks, evaluation).
class FrozenParameters {
 public:
  explicit FrozenParameters(Model& m) : model_(m) { model_.set_parameters_require_grad(false); }
  ~FrozenParameters() { model_.set_parameters_require_grad(true); }
  FrozenParameters(const FrozenParameters&) = delete;
  FrozenParameters& operator=(const FrozenParameters&) = delete;

 private:
  Model& model_;
};

// x with channels-last strides, values unchanged: x itself when it already reads as channels-last
// or is not 4-D, else a copy. A convolution whose input or weight is channels-last runs in NHWC
// (oneDNN), and so do the layers after it; see Model::set_channels_last.
torch::Tensor channels_last(const torch::Tensor& x);

// RAII: the model's weights in channels-last strides for the scope, contiguous again after it;
// with `on` false the weights stay NCHW and so do the gradient passes' inputs for the scope (the
// whole run in NCHW, `--nchw`).
class ChannelsLast {
 public:
  ChannelsLast(Model& m, bool on) : model_(m), on_(on), gradients_were_(m.channels_last_gradients()) {
    if (on_) model_.set_channels_last(true);
    else model_.use_channels_last_gradients(false);
  }
  ~ChannelsLast() {
    if (on_) model_.set_channels_last(false);
    else model_.use_channels_last_gradients(gradients_were_);
  }
  ChannelsLast(const ChannelsLast&) = delete;
  ChannelsLast& operator=(const ChannelsLast&) = delete;

 private:
  Model& model_;
  bool on_;
  bool gradients_were_;
};

// RAII: the model in eval mode for the scope, then each submodule back in the mode it had (a
// model being fine-tuned may hold some in eval mode). Evaluation and attacks judge the model as it
// is deployed: BatchNorm normalises with its running statistics and leaves them alone, dropout is
// off. A no-op, and safe from concurrent threads, when the model is already in eval mode; switching
// writes the modules' flags, like set_training().
class EvalMode {
 public:
  explicit EvalMode(const Model& m);
  ~EvalMode();
  EvalMode(const EvalMode&) = delete;
  EvalMode& operator=(const EvalMode&) = delete;

 private:
  std::vector<torch::jit::Module> were_training_;
};

}  // namespace bulwark::model
