// attack/losses.h — per-sample losses the attacks maximise (shape [N]).
#pragma once

#include <string>

#include <torch/types.h>

namespace bulwark::attack {

enum class Loss { kCrossEntropy, kMargin, kDlr };

std::string to_string(Loss l);
Loss parse_loss(const std::string& s);  // "ce" | "margin" | "dlr"

// Cross-entropy per sample.
torch::Tensor ce_loss(const torch::Tensor& logits, const torch::Tensor& y);
// CW margin: max_{j != y} z_j - z_y (positive = misclassified).
torch::Tensor margin_loss(const torch::Tensor& logits, const torch::Tensor& y);
// Difference of Logits Ratio (Croce & Hein 2020, eq. 6), as in the reference implementation:
// -(z_y - max_{j!=y} z_j) / (z_pi1 - z_pi3 + 1e-12), with z sorted descending.
torch::Tensor dlr_loss(const torch::Tensor& logits, const torch::Tensor& y);
// Targeted DLR: -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2 + 1e-12). Needs >= 4 classes.
torch::Tensor dlr_targeted_loss(const torch::Tensor& logits, const torch::Tensor& y, const torch::Tensor& target);

torch::Tensor per_sample_loss(Loss loss, const torch::Tensor& logits, const torch::Tensor& y);

}  // namespace bulwark::attack
