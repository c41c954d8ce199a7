// Precompiled for every target that uses LibTorch; never included by hand.
#pragma once
#include <torch/script.h>
#include <torch/torch.h>

#include <nlohmann/json.hpp>
