#include "serve/scorer.h"

#include <torch/torch.h>

#include <cmath>

#include "core/error.h"

namespace bulwark::serve {

at::Tensor MaxSoftmaxScorer::score(const at::Tensor& logits) const {
  return 1.0 - torch::softmax(logits, 1).amax(1);
}

at::Tensor EntropyScorer::score(const at::Tensor& logits) const {
  const auto logp = torch::log_softmax(logits, 1);
  const auto h = -(logp.exp() * logp).sum(1);
  const auto k = logits.size(1);
  return k > 1 ? (h / std::log(static_cast<double>(k))).clamp(0.0, 1.0) : torch::zeros_like(h);
}

std::shared_ptr<const Scorer> make_scorer(const std::string& name) {
  if (name == "none") return nullptr;
  if (name == "max-softmax") return std::make_shared<MaxSoftmaxScorer>();
  if (name == "entropy") return std::make_shared<EntropyScorer>();
  throw invalid_argument("--guard: unknown scorer '" + name + "' (known: max-softmax, entropy, none)");
}

}  // namespace bulwark::serve
