// model/zoo.h — the built-in architectures, built as TorchScript modules with PyTorch's default
// initialisation so they train, save and load exactly like models scripted in Python.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "model/model.h"

namespace bulwark::model {

// "mlp" (784-256-128-10), "cnn-small" (conv16 4x4 s2, conv32 4x4 s2, fc100),
// "cnn" (conv32 3x3, pool, conv64 3x3, pool, fc128); "resnet18" and "preact-resnet18", the CIFAR
// variants (model/resnet.h).
const std::vector<std::string>& zoo_architectures();

// Builds `arch` for `spec.input_shape` and `spec.class_names.size()` classes, seeded.
// Unknown names throw invalid_argument listing the zoo.
Model create_model(const std::string& arch, ModelSpec spec, uint64_t seed);

}  // namespace bulwark::model
