// model/max_pool.h — max-pooling without autograd (verdict passes, Square's queries, serving):
// the same values as ATen's max_pool2d, bit for bit, from a kernel the compiler vectorizes.
//
// Why: ATen 1.13's NCHW max-pool is a scalar loop that also writes an int64 index per output even
// when no gradient will be taken. Passes under autograd keep ATen's operator: its indices make its
// backward cheap, and a byte-offset variant of this kernel measured slower there (its rows, 14
// outputs wide on the zoo `cnn`, are too short for the vectorizer; docs/BENCHMARKS.md, max_pool).
//
// Registered as the TorchScript operator bulwark::max_pool2d (same schema as aten::max_pool2d), which
// model/forward_graph.h puts in place of aten::max_pool2d in the graph Bulwark runs. It hands to
// ATen: inputs that require a gradient under grad mode, dilation, ceil_mode, dtypes other than float
// (a bfloat16 variant measured slower on small planes), non-contiguous or non-CPU inputs, and arguments ATen rejects
// (its error then).
#pragma once

#include <ATen/core/symbol.h>
#include <torch/types.h>

namespace bulwark::model {

// Same arguments and semantics as torch::max_pool2d (stride empty = kernel_size).
torch::Tensor fast_max_pool2d(const torch::Tensor& x, at::IntArrayRef kernel_size, at::IntArrayRef stride = {},
                              at::IntArrayRef padding = 0, at::IntArrayRef dilation = 1, bool ceil_mode = false);

// Whether fast_max_pool2d computes this case itself (true) or hands it to ATen (false), in the
// current grad mode.
bool fast_max_pool2d_covers(const torch::Tensor& x, at::IntArrayRef kernel_size, at::IntArrayRef stride,
                            at::IntArrayRef padding, at::IntArrayRef dilation, bool ceil_mode);

// The operator's name in TorchScript graphs.
c10::Symbol max_pool2d_symbol();

}  // namespace bulwark::model
