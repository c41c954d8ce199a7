#include "model/zoo.h"

#include <torch/torch.h>

#include "core/error.h"
#include "model/resnet.h"

namespace bulwark::model {
namespace {

// Emits TorchScript for a feed-forward stack and registers its parameters, initialised by
// torch::nn's own layers so the initial weights match PyTorch's defaults for the same seed.
class ScriptBuilder {
 public:
  ScriptBuilder(const std::string& arch, const std::vector<int64_t>& shape)
      : module_("__torch__.bulwark." + class_name(arch)), c_(shape[0]), h_(shape[1]), w_(shape[2]) {}

  void conv(const std::string& name, int64_t out, int64_t kernel, int64_t stride, int64_t pad) {
    torch::nn::Conv2d layer(torch::nn::Conv2dOptions(c_, out, kernel).stride(stride).padding(pad));
    add_params(name, layer->weight, layer->bias);
    body_ += "    x = torch.relu(torch.conv2d(x, self." + name + "_weight, self." + name + "_bias, [" +
             std::to_string(stride) + ", " + std::to_string(stride) + "], [" + std::to_string(pad) + ", " +
             std::to_string(pad) + "]))\n";
    c_ = out;
    h_ = (h_ + 2 * pad - kernel) / stride + 1;
    w_ = (w_ + 2 * pad - kernel) / stride + 1;
    if (h_ <= 0 || w_ <= 0) throw invalid_argument("input shape too small for this architecture");
  }

  void max_pool2() {
    body_ += "    x = torch.max_pool2d(x, [2, 2])\n";
    h_ /= 2;
    w_ /= 2;
    if (h_ <= 0 || w_ <= 0) throw invalid_argument("input shape too small for this architecture");
  }

  void flatten() {
    body_ += "    x = torch.flatten(x, 1)\n";
    c_ = c_ * h_ * w_;
    h_ = w_ = 1;
  }

  void hidden(const std::string& name, int64_t out) {
    torch::nn::Linear layer(c_, out);
    add_params(name, layer->weight, layer->bias);
    body_ += "    x = torch.relu(torch.linear(x, self." + name + "_weight, self." + name + "_bias))\n";
    c_ = out;
  }

  // The classifier head: features() is everything before it, forward() applies it.
  torch::jit::Module finish(int64_t classes) {
    torch::nn::Linear head(c_, classes);
    add_params("head", head->weight, head->bias);
    module_.define("def features(self, x):\n" + body_ + "    return x\n\n" +
                   "def forward(self, x):\n"
                   "    return torch.linear(self.features(x), self.head_weight, self.head_bias)\n");
    return module_;
  }

 private:
  static std::string class_name(const std::string& arch) {
    std::string out;
    bool upper = true;
    for (char ch : arch) {
      if (ch == '-' || ch == '_') {
        upper = true;
        continue;
      }
      out += upper ? static_cast<char>(std::toupper(static_cast<unsigned char>(ch))) : ch;
      upper = false;
    }
    return out;
  }

  void add_params(const std::string& name, const torch::Tensor& weight, const torch::Tensor& bias) {
    module_.register_parameter(name + "_weight", weight.detach().clone().requires_grad_(true), false);
    module_.register_parameter(name + "_bias", bias.detach().clone().requires_grad_(true), false);
  }

  torch::jit::Module module_;
  std::string body_;
  int64_t c_, h_, w_;
};

}  // namespace

const std::vector<std::string>& zoo_architectures() {
  static const std::vector<std::string> kArchs = {"mlp", "cnn-small", "cnn", "resnet18", "preact-resnet18"};
  return kArchs;
}

Model create_model(const std::string& arch, ModelSpec spec, uint64_t seed) {
  if (spec.input_shape.size() != 3) throw invalid_argument("model input shape must be [C, H, W]");
  if (spec.class_names.empty()) throw invalid_argument("model needs at least one class");
  torch::manual_seed(seed);
  if (arch == "resnet18" || arch == "preact-resnet18") {
    spec.arch = arch;
    spec.seed = seed;
    auto module = build_resnet18(spec.input_shape, spec.num_classes(), arch == "preact-resnet18");
    return Model(std::move(module), std::move(spec));
  }
  ScriptBuilder b(arch, spec.input_shape);
  if (arch == "mlp") {
    b.flatten();
    b.hidden("fc1", 256);
    b.hidden("fc2", 128);
  } else if (arch == "cnn-small") {
    b.conv("conv1", 16, 4, 2, 1);
    b.conv("conv2", 32, 4, 2, 1);
    b.flatten();
    b.hidden("fc1", 100);
  } else if (arch == "cnn") {
    b.conv("conv1", 32, 3, 1, 1);
    b.max_pool2();
    b.conv("conv2", 64, 3, 1, 1);
    b.max_pool2();
    b.flatten();
    b.hidden("fc1", 128);
  } else {
    std::string known;
    for (const auto& a : zoo_architectures()) known += (known.empty() ? "" : ", ") + a;
    throw invalid_argument("--model: unknown architecture '" + arch + "' (known: " + known + ")");
  }
  spec.arch = arch;
  spec.seed = seed;
  torch::jit::Module module = b.finish(spec.num_classes());
  return Model(std::move(module), std::move(spec));
}

}  // namespace bulwark::model
