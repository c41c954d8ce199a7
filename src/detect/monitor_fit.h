// detect/monitor_fit.h — the stream monitor's clean reference, fitted from a model's answers on
// clean held-out data through a calibrated detector set; `detect calibrate` stores it in the
// calibration file, `serve` builds each model's monitor from it.
#pragma once

#include <nlohmann/json.hpp>
#include <torch/types.h>

#include "detect/calibration.h"

namespace bulwark::detect {

// x: clean inputs, y: their labels (for the reference accuracy). Returns MonitorReference JSON.
// `cancel` is read before each chunk of 500 (throws Cancelled).
nlohmann::json fit_monitor_reference(const DetectorSet& set, const model::Model& m, const torch::Tensor& x,
                                     const torch::Tensor& y, const CancelFlag& cancel = nullptr);

}  // namespace bulwark::detect
