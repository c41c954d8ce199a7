// model/spec.h — what a model expects and where it came from; saved inside the model archive
// (TorchScript extra file "bulwark.json") so every tool downstream reads the same facts.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace bulwark::model {

constexpr const char* kSpecExtraFile = "bulwark.json";
constexpr const char* kSpecFormat = "bulwark-model/1";

struct ModelSpec {
  std::string arch = "torchscript";            // zoo name, or "torchscript" for models from PyTorch
  std::vector<int64_t> input_shape{1, 28, 28};  // C, H, W (batch dimension excluded)
  float lo = 0.0f;                              // valid input range, used by attacks and validation
  float hi = 1.0f;
  // Per-channel normalisation the model expects, applied by Model before its module runs:
  // (x - mean) / std. Empty: the module takes pixels in [lo, hi] as they are (or normalises inside).
  // Attacks, eps and the valid range stay in pixel space, as RobustBench does.
  std::vector<float> mean;
  std::vector<float> std;
  std::vector<std::string> class_names;
  // The submodule (dotted name, e.g. "layer4" or "layer4.1") whose output feature detectors read,
  // set by `bulwark import --feature-layer`. Empty: the input of the final linear layer, found in
  // the graph (model.h).
  std::string feature_layer;
  std::string dataset;
  uint64_t seed = 0;
  nlohmann::json training = nlohmann::json::object();   // summary written by `bulwark train`
  nlohmann::json hardening = nlohmann::json::object();  // written by `bulwark harden`

  int64_t num_classes() const { return static_cast<int64_t>(class_names.size()); }
  bool normalises() const { return !mean.empty(); }
  nlohmann::json to_json() const;
  // Validates every field; errors name the field (prefixed by `where`, e.g. the file).
  static ModelSpec from_json(const nlohmann::json& j, const std::string& where);
};

// Fashion-MNIST-shaped defaults (1x28x28 in [0,1], 10 classes named "0".."9"), for the zoo's
// builders and tests; a file without a spec never gets these (Model::load refuses it).
ModelSpec default_spec(int64_t num_classes = 10);

// Throws invalid_argument naming `what` unless `name` is a dotted submodule name.
void check_feature_layer(const std::string& name, const std::string& what);

// "3x32x32" or "3,32,32" -> {3, 32, 32}; errors name `flag`.
std::vector<int64_t> parse_shape(const std::string& text, const std::string& flag);
// "0.4914,0.4822,0.4465" -> floats; errors name `flag`.
std::vector<float> parse_floats(const std::string& text, const std::string& flag);

}  // namespace bulwark::model
