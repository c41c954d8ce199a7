// bench/bare_cnn.h — the zoo's `cnn` written as plain torch::nn, the "bare LibTorch" side of the
// benchmarks. Weights can be copied from a Bulwark model so both sides compute the same thing.
#pragma once

#include <torch/torch.h>

#include "model/model.h"

namespace bulwark::bench {

struct BareCnn : torch::nn::Module {
  BareCnn()
      : conv1(register_module("conv1", torch::nn::Conv2d(torch::nn::Conv2dOptions(1, 32, 3).padding(1)))),
        conv2(register_module("conv2", torch::nn::Conv2d(torch::nn::Conv2dOptions(32, 64, 3).padding(1)))),
        fc1(register_module("fc1", torch::nn::Linear(64 * 7 * 7, 128))),
        head(register_module("head", torch::nn::Linear(128, 10))) {}

  torch::Tensor forward(torch::Tensor x) {
    x = torch::max_pool2d(torch::relu(conv1(x)), 2);
    x = torch::max_pool2d(torch::relu(conv2(x)), 2);
    return head(torch::relu(fc1(x.flatten(1))));
  }

  // Copies a zoo `cnn`'s parameters (same order: conv1, conv2, fc1, head; weight then bias).
  void copy_from(const model::Model& m) {
    torch::NoGradGuard no_grad;
    const auto src = m.parameters();
    auto dst = parameters();
    TORCH_CHECK(src.size() == dst.size(), "not a zoo cnn");
    for (size_t i = 0; i < src.size(); ++i) dst[i].copy_(src[i]);
  }

  torch::nn::Conv2d conv1, conv2;
  torch::nn::Linear fc1, head;
};

}  // namespace bulwark::bench
