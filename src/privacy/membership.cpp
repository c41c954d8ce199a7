#include "privacy/membership.h"

#include <torch/torch.h>

#include "core/error.h"

namespace bulwark::privacy {

torch::Tensor scaled_confidence(const torch::Tensor& logits, const torch::Tensor& labels) {
  if (logits.dim() != 2 || labels.dim() != 1 || logits.size(0) != labels.size(0)) {
    throw invalid_argument("scaled_confidence: logits [N, K] and labels [N] expected");
  }
  const torch::Tensor z = logits.to(torch::kFloat64);
  const torch::Tensor y = labels.to(torch::kInt64).unsqueeze(1);
  const torch::Tensor z_true = z.gather(1, y).squeeze(1);
  // log(p_y / (1 - p_y)) = z_y - logsumexp over the other classes.
  const torch::Tensor others = z.scatter(1, y, -std::numeric_limits<double>::infinity());
  return z_true - torch::logsumexp(others, 1);
}

torch::Tensor scaled_confidence(const model::Model& m, const torch::Tensor& x, const torch::Tensor& labels) {
  return scaled_confidence(m.predict_logits(x), labels);
}

std::vector<double> loss_scores(const model::Model& m, const torch::Tensor& x, const torch::Tensor& labels) {
  const torch::Tensor logits = m.predict_logits(x).to(torch::kFloat64);
  const torch::Tensor loss =
      torch::nn::functional::cross_entropy(logits, labels.to(torch::kInt64),
                                           torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kNone));
  const torch::Tensor s = (-loss).contiguous();
  return {s.data_ptr<double>(), s.data_ptr<double>() + s.numel()};
}

std::vector<double> lira_offline_scores(const torch::Tensor& target_phi, const torch::Tensor& shadow_phi,
                                        bool global_variance) {
  if (target_phi.dim() != 1 || shadow_phi.dim() != 2 || shadow_phi.size(1) != target_phi.size(0)) {
    throw invalid_argument("LiRA: target phi [N] and shadow phi [shadows, N] expected");
  }
  if (shadow_phi.size(0) < 2) {
    throw invalid_argument("LiRA needs at least 2 shadow models to estimate a spread (got " +
                           std::to_string(shadow_phi.size(0)) + "): raise --shadows");
  }
  const torch::Tensor shadows = shadow_phi.to(torch::kFloat64);
  const torch::Tensor mean_out = shadows.mean(0);
  torch::Tensor var_out = shadows.var(0, /*unbiased=*/true);
  if (global_variance) var_out = var_out.mean().expand_as(mean_out);
  // A floor on the spread: examples every shadow scores alike (phi saturated) would otherwise
  // divide by ~0 and outrank every informative example.
  const torch::Tensor sigma = var_out.clamp_min(1e-6).sqrt();
  const torch::Tensor z = ((target_phi.to(torch::kFloat64) - mean_out) / sigma).contiguous();
  return {z.data_ptr<double>(), z.data_ptr<double>() + z.numel()};
}

}  // namespace bulwark::privacy
