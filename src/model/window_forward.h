// model/window_forward.h — logits of images that differ from a cached base only inside one window,
// computed without redoing the whole forward: Square's L∞ queries (attack/square.h), where each
// query changes one s×s window of every standing image and s is 1–4 pixels for most of the budget.
//
// A model qualifies when its frozen forward (torch::jit::freeze of a copy) starts with a chain of
// 2-D convolutions (any stride and zero padding, dilation 1), ReLUs and unpadded max-pools, each
// reading only the previous one's output, with at least one convolution; whatever follows (flatten,
// linear layers, ...) is the "tail", run in full. The zoo's `cnn` and `cnn-small` qualify, and so do
// PyTorch-exported nn.Sequential CNNs. The outputs of the chain for every base image stay cached; a
// query recomputes each layer only over the rows and columns its window reaches (the window grown
// by each kernel's reach). When the chain is followed by flatten and a linear layer (the "head"),
// the head's output is updated by the product of the region's change with the matching columns of
// its weight; the rest (the tail) runs in full. For the zoo `cnn` and a 2×2 window that is ~8×
// fewer FLOPs than a full forward.
//
// The logits agree with Model::logits to float rounding (convolutions over a slice sum in a
// different order), not bit for bit: like model/frozen_forward.h this steers a search and never
// decides a verdict. create() checks that agreement on random inputs and declines otherwise.
#pragma once

#include <torch/script.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "model/model.h"

namespace bulwark::model {

// Rows [top, top + height) and columns [left, left + width) of an image, all channels.
struct Window {
  int64_t top = 0, left = 0, height = 0, width = 0;
};

class WindowForward {
 public:
  // Cached activations above this many bytes make create() decline (the caller then runs full
  // forwards): the cache holds every layer's output for every base image.
  static constexpr int64_t kMaxCacheBytes = int64_t{512} << 20;

  // An engine for `m` as it is now (later weight changes are not seen), for up to `max_images`
  // base images; nullptr when the model does not qualify (see above), its cache would pass
  // kMaxCacheBytes, or the self-check fails.
  static std::unique_ptr<WindowForward> create(const Model& m, int64_t max_images);
  ~WindowForward();
  WindowForward(const WindowForward&) = delete;
  WindowForward& operator=(const WindowForward&) = delete;

  // Makes `base` [N, C, H, W] the cached images (N <= max_images) and returns their logits.
  torch::Tensor reset(const torch::Tensor& base);

  // Logits of x [M, C, H, W], where x[i] equals base[rows[i]] outside `changed` (rows: int64 [M],
  // ascending). Each call's rows must be a subset of the previous call's (all rows after reset):
  // the cache drops the rest, as Square drops the points it fooled. The query's activations are
  // kept until the next query, for accept().
  torch::Tensor query(const torch::Tensor& rows, const torch::Tensor& x, const Window& changed);

  // Makes the last query's images the base of the rows where `take` (bool [M]) is true.
  void accept(const torch::Tensor& take);

  // Per base image, the bytes of cached activations.
  int64_t cache_bytes_per_image() const { return cache_bytes_per_image_; }
  // How the model was split: layers run over windows (a ReLU folded into the layer before it),
  // and whether a flatten + linear layer after them is updated from the window's change alone.
  size_t window_layers() const;
  bool incremental_head() const { return head_weight_.defined(); }

  // The head's outputs are kept as sums of changes; every this many accepting queries they are
  // recomputed from the cached activations, so float rounding cannot pile up.
  static constexpr int kHeadRefreshEvery = 64;

  struct Layer;  // model/window_forward.cpp

 private:
  WindowForward() = default;
  void keep_rows(const torch::Tensor& rows);
  torch::Tensor head(const torch::Tensor& last) const;

  std::vector<Layer> layers_;
  torch::Tensor head_weight_, head_bias_;  // a linear layer over the flattened chain (may be undefined)
  torch::Tensor head_weight_hwc_;          // head_weight_ as [out, H, W, C] of the chain's output
  std::shared_ptr<torch::jit::Function> tail_;  // the rest of the forward; input: the head's (or chain's) output
  int64_t cache_bytes_per_image_ = 0;

  int64_t base_rows_ = 0;
  torch::Tensor rows_;                // the base rows the cache holds, ascending
  std::vector<torch::Tensor> cache_;  // per layer: its output for those rows, channels-last
  torch::Tensor head_out_;            // the head's output for those rows
  int accepts_since_refresh_ = 0;
  // The last query: per layer its recomputed region and where it lies in the layer's output; the
  // head's output.
  std::vector<torch::Tensor> new_values_;
  std::vector<Window> regions_;
  torch::Tensor new_head_out_;
};

}  // namespace bulwark::model
