// privacy/membership.h — membership scores of examples under a model: higher = more likely a
// training member. The audit (audit.h) compares their distributions for known members and
// non-members; these functions only score.
#pragma once

#include <vector>

#include <torch/types.h>

#include "model/model.h"

namespace bulwark::privacy {

// Logit-scaled confidence in the true class, phi = log(p_y / (1 - p_y)), from the logits without
// forming p_y (LiRA's statistic: near Gaussian across models, where p_y is not). Double [N].
torch::Tensor scaled_confidence(const torch::Tensor& logits, const torch::Tensor& labels);

// The same for a model over images x (float in the spec's range) in eval mode, in batches.
torch::Tensor scaled_confidence(const model::Model& m, const torch::Tensor& x, const torch::Tensor& labels);

// The loss-threshold attack's score: minus the cross-entropy of each example (low loss = member).
std::vector<double> loss_scores(const model::Model& m, const torch::Tensor& x, const torch::Tensor& labels);

// Offline LiRA (Carlini et al. 2022, section VI-C): every shadow model is OUT for every example,
// and the score is how far the target's phi lies above the OUT distribution, in its standard
// deviations: (phi - mean_out) / sigma_out, a monotone form of the paper's one-sided Gaussian
// likelihood that does not saturate to 1.0 in double. `shadow_phi` is [shadows, N]. With
// `global_variance` sigma_out is pooled over all examples (the paper's choice below 64 shadows).
std::vector<double> lira_offline_scores(const torch::Tensor& target_phi, const torch::Tensor& shadow_phi,
                                        bool global_variance);

}  // namespace bulwark::privacy
