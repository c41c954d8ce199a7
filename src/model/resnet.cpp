#include "model/resnet.h"

#include <torch/torch.h>

#include "core/error.h"

namespace bulwark::model {
namespace {

// Emits TorchScript statements for a ResNet, registering each layer's parameters under a flat name.
class ResNetScript {
 public:
  explicit ResNetScript(const std::string& class_name) : module_("__torch__.bulwark." + class_name) {
    module_.register_attribute("training", c10::BoolType::get(), true);
  }

  // conv (no bias): returns the expression.
  std::string conv(const std::string& name, const std::string& in, int64_t cin, int64_t cout, int64_t k,
                   int64_t stride) {
    torch::nn::Conv2d layer(torch::nn::Conv2dOptions(cin, cout, k).stride(stride).padding(k / 2).bias(false));
    param(name + "_weight", layer->weight);
    const std::string s = std::to_string(stride), p = std::to_string(k / 2);
    return "torch.conv2d(" + in + ", self." + name + "_weight, None, [" + s + ", " + s + "], [" + p + ", " + p + "])";
  }

  std::string bn(const std::string& name, const std::string& in, int64_t c) {
    param(name + "_weight", torch::ones({c}));
    param(name + "_bias", torch::zeros({c}));
    module_.register_buffer(name + "_running_mean", torch::zeros({c}));
    module_.register_buffer(name + "_running_var", torch::ones({c}));
    return "torch.batch_norm(" + in + ", self." + name + "_weight, self." + name + "_bias, self." + name +
           "_running_mean, self." + name + "_running_var, self.training, 0.1, 1e-05, False)";
  }

  void line(const std::string& s) { body_ += "    " + s + "\n"; }

  torch::jit::Module finish(int64_t features, int64_t classes) {
    torch::nn::Linear head(features, classes);
    param("head_weight", head->weight);
    param("head_bias", head->bias);
    module_.define("def features(self, x):\n" + body_ + "    return x\n\n" +
                   "def forward(self, x):\n"
                   "    return torch.linear(self.features(x), self.head_weight, self.head_bias)\n");
    return module_;
  }

 private:
  void param(const std::string& name, const torch::Tensor& t) {
    module_.register_parameter(name, t.detach().clone().requires_grad_(true), false);
  }

  torch::jit::Module module_;
  std::string body_;
};

}  // namespace

torch::jit::Module build_resnet18(const std::vector<int64_t>& input_shape, int64_t classes, bool preact) {
  if (input_shape.size() != 3) throw invalid_argument("model input shape must be [C, H, W]");
  if (input_shape[1] < 8 || input_shape[2] < 8) {
    throw invalid_argument("resnet18 needs images of at least 8x8 (three stride-2 stages), got " +
                           std::to_string(input_shape[1]) + "x" + std::to_string(input_shape[2]));
  }
  ResNetScript s(preact ? "PreactResnet18" : "Resnet18");
  s.line("x = " + s.conv("conv1", "x", input_shape[0], 64, 3, 1));
  if (!preact) s.line("x = torch.relu(" + s.bn("bn1", "x", 64) + ")");
  int64_t in = 64;
  const int64_t widths[4] = {64, 128, 256, 512};
  for (int stage = 0; stage < 4; ++stage) {
    for (int block = 0; block < 2; ++block) {
      const int64_t planes = widths[stage];
      const int64_t stride = (stage > 0 && block == 0) ? 2 : 1;
      const bool projection = stride != 1 || in != planes;
      const std::string p = "layer" + std::to_string(stage + 1) + "_" + std::to_string(block) + "_";
      if (preact) {
        // out = relu(bn1(x)); shortcut = proj(out) or x; out = conv2(relu(bn2(conv1(out)))) + shortcut
        s.line("o = torch.relu(" + s.bn(p + "bn1", "x", in) + ")");
        s.line(std::string("sc = ") + (projection ? s.conv(p + "shortcut", "o", in, planes, 1, stride) : "x"));
        s.line("o = " + s.conv(p + "conv1", "o", in, planes, 3, stride));
        s.line("o = torch.relu(" + s.bn(p + "bn2", "o", planes) + ")");
        s.line("x = " + s.conv(p + "conv2", "o", planes, planes, 3, 1) + " + sc");
      } else {
        // out = relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))
        s.line("o = torch.relu(" + s.bn(p + "bn1", s.conv(p + "conv1", "x", in, planes, 3, stride), planes) + ")");
        s.line("o = " + s.bn(p + "bn2", s.conv(p + "conv2", "o", planes, planes, 3, 1), planes));
        if (projection) {
          s.line("sc = " + s.bn(p + "shortcut_bn", s.conv(p + "shortcut", "x", in, planes, 1, stride), planes));
        } else {
          s.line("sc = x");
        }
        s.line("x = torch.relu(o + sc)");
      }
      in = planes;
    }
  }
  if (preact) s.line("x = torch.relu(" + s.bn("bn", "x", 512) + ")");
  s.line("x = torch.flatten(torch.adaptive_avg_pool2d(x, [1, 1]), 1)");
  return s.finish(512, classes);
}

}  // namespace bulwark::model
