// data/augment.h — the standard training augmentations for small images (CIFAR's recipe, He et al.
// 2016): a random crop of the image padded by `pad` zeros on each side (torchvision's
// RandomCrop(size, padding=pad)), and a horizontal flip with probability 1/2. Seeded per batch.
#pragma once

#include <cstdint>

#include <torch/types.h>

namespace bulwark::data {

constexpr int64_t kCropPadding = 4;

// x: float [N, C, H, W]; returns a new batch of the same shape. Deterministic in `seed`.
torch::Tensor crop_flip(const torch::Tensor& x, uint64_t seed, int64_t pad = kCropPadding);

}  // namespace bulwark::data
