// serve/scorer.h — the guard hook: a per-input attack score computed from the batch's logits on
// the batch thread, returned with every response. Scores are in [0, 1], higher = more suspicious;
// an input is flagged when its score exceeds the threshold. This issue ships confidence
// baselines; the detect module plugs real detectors in behind the same interface.
#pragma once

#include <ATen/core/Tensor.h>

#include <memory>
#include <string>

namespace bulwark::serve {

class Scorer {
 public:
  virtual ~Scorer() = default;
  virtual std::string name() const = 0;
  // logits [N, K] -> scores [N] in [0, 1]. Called from batch threads; must be thread-safe.
  virtual at::Tensor score(const at::Tensor& logits) const = 0;
};

// 1 - max softmax probability (Hendrycks & Gimpel 2017): low confidence looks suspicious.
class MaxSoftmaxScorer : public Scorer {
 public:
  std::string name() const override { return "max-softmax"; }
  at::Tensor score(const at::Tensor& logits) const override;
};

// Softmax entropy divided by log K, so 1 = uniform.
class EntropyScorer : public Scorer {
 public:
  std::string name() const override { return "entropy"; }
  at::Tensor score(const at::Tensor& logits) const override;
};

// "max-softmax", "entropy" or "none" (nullptr: the guard is off).
std::shared_ptr<const Scorer> make_scorer(const std::string& name);

}  // namespace bulwark::serve
