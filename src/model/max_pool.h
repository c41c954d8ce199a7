// model/max_pool.h — max-pooling for the attack step: the same values and the same gradients as
// ATen's max_pool2d, bit for bit, at a fraction of its memory traffic.
//
// Why: in the step of every attack and of adversarial training (forward plus input-gradient pass),
// ATen 1.13's NCHW max-pool writes an int64 index per output, and its backward zero-fills the whole
// input-sized gradient before scattering into it: on the zoo `cnn` the two took a quarter of the step
// (docs/BENCHMARKS.md, attack_step). This kernel keeps a one-byte window offset instead and fills
// and scatters one channel plane at a time, while the plane is in cache.
//
// Registered as the TorchScript operator bulwark::max_pool2d (same schema as aten::max_pool2d), which
// model/forward_graph.h puts in place of aten::max_pool2d in the graph Bulwark runs. Cases it does
// not cover (dilation, ceil_mode, dtypes other than float and bfloat16, non-contiguous or non-CPU
// input, windows over 255 elements) run ATen's operator unchanged.
#pragma once

#include <ATen/core/symbol.h>
#include <torch/types.h>

namespace bulwark::model {

// Same arguments and semantics as torch::max_pool2d (stride empty = kernel_size).
torch::Tensor fast_max_pool2d(const torch::Tensor& x, at::IntArrayRef kernel_size, at::IntArrayRef stride = {},
                         at::IntArrayRef padding = 0, at::IntArrayRef dilation = 1, bool ceil_mode = false);

// Whether fast_max_pool2d computes this case itself (true) or hands it to ATen (false).
bool fast_max_pool2d_covers(const torch::Tensor& x, at::IntArrayRef kernel_size, at::IntArrayRef stride,
                               at::IntArrayRef padding, at::IntArrayRef dilation, bool ceil_mode);

// The operator's name in TorchScript graphs.
c10::Symbol max_pool2d_symbol();

}  // namespace bulwark::model
