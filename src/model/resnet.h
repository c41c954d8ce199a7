// model/resnet.h — the zoo's ResNets for small images (CIFAR's 3x32x32 and other sizes), built as
// TorchScript like the rest of the zoo: "resnet18" is the CIFAR variant of He et al. 2016 (3x3 stem,
// no max-pool, as pytorch-cifar's ResNet18) and "preact-resnet18" the pre-activation one (He et al.
// 2016b, with the final BatchNorm + ReLU of Rice et al. 2020's robust-overfitting code), the two
// networks adversarial-training papers report on CIFAR-10.
#pragma once

#include <cstdint>
#include <vector>

#include <torch/script.h>

namespace bulwark::model {

// features(x) is the global-average-pooled 512-vector; forward(x) = linear(features(x), head).
// Parameters and buffers get PyTorch's default initialisation (Conv2d's, BatchNorm's, Linear's) from
// the current seed. BatchNorm follows the module's `training` flag.
torch::jit::Module build_resnet18(const std::vector<int64_t>& input_shape, int64_t classes, bool preact);

}  // namespace bulwark::model
