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
  std::vector<std::string> class_names;
  std::string dataset;
  uint64_t seed = 0;
  nlohmann::json training = nlohmann::json::object();   // summary written by `bulwark train`
  nlohmann::json hardening = nlohmann::json::object();  // written by `bulwark harden`
  bool assumed = false;  // true when the archive had no spec and defaults were assumed

  int64_t num_classes() const { return static_cast<int64_t>(class_names.size()); }
  nlohmann::json to_json() const;
  // Validates every field; errors name the field (prefixed by `where`, e.g. the file).
  static ModelSpec from_json(const nlohmann::json& j, const std::string& where);
};

// Fashion-MNIST-shaped defaults (1x28x28 in [0,1], 10 classes named "0".."9").
ModelSpec default_spec(int64_t num_classes = 10);

}  // namespace bulwark::model
