// model/conv_pool.h — a one-input-channel convolution and the 2x2 max-pool after it (a grayscale
// model's first layer) as one operator in channels-last gradient passes.
//
// Why: in the zoo `cnn`'s PGD step at batch 256 the first layer's convolution writes a
// [256, 32, 28, 28] activation (26 MB), ATen's pool reads it and writes int64 indices, its backward
// zero-fills a gradient of the same size and scatters into it, and the convolution's input gradient
// reads it back: ~10 ms of a ~40 ms step for ~3 % of its arithmetic (docs/BENCHMARKS.md). Fused, the
// forward computes each 2x2 window's four convolution outputs in registers and keeps their maximum
// and its position (one byte); the backward sends each pooled gradient through the one position
// that won, as one multiply-add of a precomputed vector: the kernel placed at that position in the
// window's (kh+1) x (kw+1) input patch (<= 16 taps, so one AVX-512 vector).
//
// Registered as the TorchScript operator bulwark::conv2d_max_pool2d, which model/forward_graph.h
// (rewrite 4) puts in place of a bulwark::conv2d whose only reader is a bulwark::max_pool2d. Where
// it does not apply it runs exactly those two operators, so every pass other than the ones below is
// bit for bit what it was. It applies only in channels-last gradient passes
// (attack::logits_of's, which decide nothing: a point they find misclassified is rechecked): the
// input requires a gradient under grad mode, is 4-D float, channels-last, on the CPU, with one
// channel; groups 1, stride 1, dilation 1, (kh+1)*(kw+1) <= 16; the pool is 2x2 with stride 2, no
// padding, dilation 1, floor mode; no autocast; a non-empty input. Its backward is not itself
// differentiable (no create_graph through it). Its values equal ATen's to float rounding (the
// convolution sums in another order; the pool's comparison is ATen's: the first maximum wins, NaN
// wins); the weight and bias gradients, when asked for, are ATen's from the rebuilt activation
// gradient. tests/model/conv_pool_test.cpp checks it.
#pragma once

#include <ATen/core/symbol.h>
#include <torch/types.h>

#include <vector>

namespace bulwark::model {

// max_pool2d(conv2d(input, weight, bias, stride, padding, dilation, groups), kernel_size,
// pool_stride, pool_padding, pool_dilation, ceil_mode), each with torch's semantics.
torch::Tensor conv2d_max_pool2d(const torch::Tensor& input, const torch::Tensor& weight,
                                const c10::optional<torch::Tensor>& bias, at::IntArrayRef stride,
                                at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                                at::IntArrayRef kernel_size, at::IntArrayRef pool_stride,
                                at::IntArrayRef pool_padding, at::IntArrayRef pool_dilation, bool ceil_mode);

// Whether conv2d_max_pool2d runs fused for these arguments, in the current grad and autocast mode.
bool fused_conv2d_max_pool2d(const torch::Tensor& input, const torch::Tensor& weight,
                             const c10::optional<torch::Tensor>& bias, at::IntArrayRef stride, at::IntArrayRef padding,
                             at::IntArrayRef dilation, int64_t groups, at::IntArrayRef kernel_size,
                             at::IntArrayRef pool_stride, at::IntArrayRef pool_padding, at::IntArrayRef pool_dilation,
                             bool ceil_mode);

// The fused kernels, exposed for tests. Forward: input [N, 1, H, W], weight [C, 1, kh, kw], bias
// [C] or undefined, padding (ph, pw) -> pooled [N, C, PH, PW] (channels-last) and the position of
// each window's maximum, [N, PH, PW, C] bytes (0..3: row-major within the window).
std::vector<torch::Tensor> conv_pool_forward(const torch::Tensor& input, const torch::Tensor& weight,
                                             const torch::Tensor& bias, int64_t ph, int64_t pw);
// Backward: the gradient of the pooled output -> the gradient of the input, [N, 1, H, W].
torch::Tensor conv_pool_input_gradient(const torch::Tensor& grad_pooled, const torch::Tensor& positions,
                                       const torch::Tensor& weight, int64_t height, int64_t width, int64_t ph,
                                       int64_t pw);
// The gradient of the convolution's output the pool passes back: grad_pooled at each window's
// maximum, zero elsewhere; [N, C, OH, OW].
torch::Tensor conv_pool_activation_gradient(const torch::Tensor& grad_pooled, const torch::Tensor& positions,
                                            int64_t out_h, int64_t out_w);

// The operator's name in TorchScript graphs.
c10::Symbol conv2d_max_pool2d_symbol();

}  // namespace bulwark::model
