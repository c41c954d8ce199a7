// bench/bare_resnet.h — the zoo's `resnet18` (CIFAR variant: 3x3 stem, no max-pool, BasicBlocks
// 2-2-2-2 of 64/128/256/512, global average pool, linear head) written as plain torch::nn, the
// "bare LibTorch" side of the resnet18 benchmarks: what a user would write without Bulwark.
#pragma once

#include <torch/torch.h>

namespace bulwark::bench {

struct BareBasicBlock : torch::nn::Module {
  BareBasicBlock(int64_t in, int64_t planes, int64_t stride)
      : conv1(register_module("conv1", torch::nn::Conv2d(torch::nn::Conv2dOptions(in, planes, 3)
                                                              .stride(stride)
                                                              .padding(1)
                                                              .bias(false)))),
        bn1(register_module("bn1", torch::nn::BatchNorm2d(planes))),
        conv2(register_module(
            "conv2", torch::nn::Conv2d(torch::nn::Conv2dOptions(planes, planes, 3).padding(1).bias(false)))),
        bn2(register_module("bn2", torch::nn::BatchNorm2d(planes))) {
    if (stride != 1 || in != planes) {
      shortcut = register_module(
          "shortcut", torch::nn::Sequential(torch::nn::Conv2d(torch::nn::Conv2dOptions(in, planes, 1).stride(stride).bias(false)),
                                            torch::nn::BatchNorm2d(planes)));
    }
  }

  torch::Tensor forward(const torch::Tensor& x) {
    auto o = torch::relu(bn1(conv1(x)));
    o = bn2(conv2(o));
    return torch::relu(o + (shortcut ? shortcut->forward(x) : x));
  }

  torch::nn::Conv2d conv1;
  torch::nn::BatchNorm2d bn1;
  torch::nn::Conv2d conv2;
  torch::nn::BatchNorm2d bn2;
  torch::nn::Sequential shortcut{nullptr};
};

struct BareResNet18 : torch::nn::Module {
  explicit BareResNet18(int64_t channels = 3, int64_t classes = 10)
      : conv1(register_module(
            "conv1", torch::nn::Conv2d(torch::nn::Conv2dOptions(channels, 64, 3).padding(1).bias(false)))),
        bn1(register_module("bn1", torch::nn::BatchNorm2d(64))),
        head(register_module("head", torch::nn::Linear(512, classes))) {
    int64_t in = 64;
    const int64_t widths[4] = {64, 128, 256, 512};
    for (int stage = 0; stage < 4; ++stage) {
      for (int block = 0; block < 2; ++block) {
        const int64_t stride = (stage > 0 && block == 0) ? 2 : 1;
        blocks->push_back(std::make_shared<BareBasicBlock>(in, widths[stage], stride));
        in = widths[stage];
      }
    }
    register_module("blocks", blocks);
  }

  torch::Tensor forward(torch::Tensor x) {
    x = torch::relu(bn1(conv1(x)));
    for (const auto& b : *blocks) x = b->as<BareBasicBlock>()->forward(x);
    return head(torch::adaptive_avg_pool2d(x, {1, 1}).flatten(1));
  }

  torch::nn::Conv2d conv1;
  torch::nn::BatchNorm2d bn1;
  torch::nn::ModuleList blocks;
  torch::nn::Linear head;
};

}  // namespace bulwark::bench
