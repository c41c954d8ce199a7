// model/conv2d.h — the input gradient of a convolution over one input channel (a grayscale
// model's first layer) in channels-last gradient passes, from a kernel of our own.
//
// Why: oneDNN vectorizes a convolution's backward-data pass over input channels, so with one input
// channel it runs at a few percent of the machine's peak: 9.5 ms of a 47 ms PGD step of the zoo
// `cnn` at batch 256 here, for 1 % of its arithmetic (bench/attack_step's profile,
// docs/BENCHMARKS.md). The input gradient is, per output pixel, the pixel's gradient over the output
// channels times the kernel (a [C_out] x [C_out, kh*kw] product), added into the kh x kw input pixels
// it was computed from; done here with one vector accumulator per pixel (kh*kw <= 16), 3.7 ms.
//
// Registered as the TorchScript operator bulwark::conv2d (same schema as aten::conv2d), which
// model/forward_graph.h puts in place of aten::conv2d (the overload with numeric padding; padding="same"
// keeps ATen's) in the graph Bulwark runs. Its forward is
// ATen's conv2d, bit for bit. Only its input gradient differs, and only when the gradient pass runs
// in channels-last (attack::logits_of's gradient passes, which decide nothing: a point they find
// misclassified is rechecked): the input requires a gradient under grad mode and is 4-D float,
// channels-last, on the CPU, with one input channel, groups 1, dilation 1, kh*kw <= 16, no autocast.
// Everything else — NCHW passes, which stay exact against the module, passes without autograd,
// weight and bias gradients — is ATen's. Its input gradient equals ATen's to float rounding (the
// sums over output channels run in another order); tests/model/forward_graph_test.cpp checks it.
#pragma once

#include <ATen/core/symbol.h>
#include <torch/types.h>

namespace bulwark::model {

// Same arguments and semantics as torch::conv2d.
torch::Tensor conv2d(const torch::Tensor& input, const torch::Tensor& weight, const c10::optional<torch::Tensor>& bias,
                     at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups);

// Whether conv2d computes the input gradient itself for these arguments, in the current grad mode.
bool own_conv2d_input_gradient(const torch::Tensor& input, const torch::Tensor& weight, at::IntArrayRef stride,
                               at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups);

// The input gradient of a one-input-channel convolution: grad_output [N, C_out, OH, OW], weight
// [C_out, 1, kh, kw] (kh*kw <= 16) -> [N, 1, height, width]. Exposed for tests.
torch::Tensor single_channel_input_gradient(const torch::Tensor& grad_output, const torch::Tensor& weight,
                                            int64_t height, int64_t width, at::IntArrayRef stride,
                                            at::IntArrayRef padding);

// The operator's name in TorchScript graphs.
c10::Symbol conv2d_symbol();

// `bias`, or an empty tensor where there is none: the bias argument of this module's
// autograd::Functions, whose inputs must all be defined tensors (an undefined one fails in
// Function::apply: a bias-less convolution, as PyTorch models put before batch norm).
torch::Tensor bias_or_empty(const c10::optional<torch::Tensor>& bias, const torch::Tensor& weight);

}  // namespace bulwark::model
