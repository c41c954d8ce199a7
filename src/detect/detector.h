// detect/detector.h — per-input attack detectors. Each maps a batch (the input, the model's logits
// and, when the model exposes them, its penultimate features) to raw scores [N], higher = more
// suspicious. Scores are differentiable in x when the caller records autograd, so the adaptive
// attacker in detect/evaluate.h can attack a detector through the same code the server runs.
//
// Thread-safety: a built detector is immutable; score() may be called from any thread.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/types.h>

#include "attack/bpda.h"

namespace bulwark::model {
class Model;
}

namespace bulwark::detect {

// What detectors see. features is undefined when the model has no features() method.
struct Batch {
  torch::Tensor x, logits, features;
};

class Detector {
 public:
  virtual ~Detector() = default;
  virtual std::string name() const = 0;
  virtual bool needs_features() const { return false; }
  virtual torch::Tensor score(const model::Model& m, const Batch& b) const = 0;
  // What ran (squeezers, ...) and fitted statistics, enough to rebuild it with from_json.
  virtual nlohmann::json to_json() const { return {{"name", name()}}; }
};

// 1 - max softmax probability (Hendrycks & Gimpel 2017).
class MaxSoftmax : public Detector {
 public:
  std::string name() const override { return "max-softmax"; }
  torch::Tensor score(const model::Model& m, const Batch& b) const override;
};

// Softmax entropy / log K.
class Entropy : public Detector {
 public:
  std::string name() const override { return "entropy"; }
  torch::Tensor score(const model::Model& m, const Batch& b) const override;
};

// Feature squeezing (Xu, Evans & Qi, NDSS 2018): max over squeezers of the L1 distance between the
// softmax on x and on the squeezed x. Each squeezer runs one extra forward pass. The squeezers pass
// gradients straight through (BPDA), so an adaptive attack sees the detector as it is.
class FeatureSqueezing : public Detector {
 public:
  // specs like {"bits:4", "median:2"} (attack/squeeze.h syntax; '+' chains one squeezer).
  FeatureSqueezing(std::vector<std::string> specs, double lo, double hi);
  std::string name() const override { return "squeeze"; }
  torch::Tensor score(const model::Model& m, const Batch& b) const override;
  nlohmann::json to_json() const override;
  const std::vector<std::string>& specs() const { return specs_; }

 private:
  std::vector<std::string> specs_;
  std::vector<attack::Preprocess> squeezers_;
};

// Mahalanobis distance on penultimate features (Lee et al., NeurIPS 2018): class-conditional
// means with one tied covariance, fitted on clean training data; score = distance to the closest
// class mean. (The paper's input pre-processing step and layer ensemble are not implemented: the
// first needs a gradient pass per request, the second features of every layer.)
class Mahalanobis : public Detector {
 public:
  // means [K, D], precision [D, D] (inverse of the tied covariance).
  Mahalanobis(torch::Tensor means, torch::Tensor precision);
  // Fits on features [N, D] with labels [N] in 0..K-1; every class needs >= 2 points.
  static std::shared_ptr<Mahalanobis> fit(const torch::Tensor& features, const torch::Tensor& labels, int64_t classes);
  std::string name() const override { return "mahalanobis"; }
  bool needs_features() const override { return true; }
  torch::Tensor score(const model::Model& m, const Batch& b) const override;
  nlohmann::json to_json() const override;
  const torch::Tensor& means() const { return means_; }
  const torch::Tensor& precision() const { return precision_; }

 private:
  torch::Tensor means_, precision_;
  torch::Tensor precision_means_, means_term_;  // P mu^T [D, K] and mu P mu^T [1, K], fixed
};

// Energy in the input's trailing principal components, whitened (Hendrycks & Gimpel 2017,
// "Early methods for detecting adversarial images"): clean images have almost no variance in their
// last components (on Fashion-MNIST, largely the border pixels), while an L-inf attack spreads its
// perturbation over all of them. score = sum over the trailing components j of c_j^2 / lambda_j.
// Carlini & Wagner (2017) bypass it with an adaptive attack; detect evaluate measures that too.
class PcaWhitened : public Detector {
 public:
  // mean [D], basis [D, M] (the M trailing eigenvectors), inv_var [M].
  PcaWhitened(torch::Tensor mean, torch::Tensor basis, torch::Tensor inv_var);
  // Fits on clean inputs x [N, ...]: keeps the components past the first `leading_fraction` of D.
  static std::shared_ptr<PcaWhitened> fit(const torch::Tensor& x, double leading_fraction = 0.9);
  std::string name() const override { return "pca"; }
  torch::Tensor score(const model::Model& m, const Batch& b) const override;
  nlohmann::json to_json() const override;
  int64_t components() const { return basis_.size(1); }

 private:
  torch::Tensor mean_, basis_, inv_var_;
};

// The detector names `--detectors` accepts.
const std::vector<std::string>& known_detectors();
// "max-softmax,squeeze" -> validated names, in order, no duplicates; errors name `flag`.
std::vector<std::string> parse_detector_list(const std::string& csv, const std::string& flag);
// Builds an unfitted detector by name (mahalanobis and pca need fitting: use their fit()).
std::shared_ptr<Detector> make_detector(const std::string& name, double lo, double hi,
                                        const std::vector<std::string>& squeezers);
// Rebuilds a detector from its to_json() (a calibration file); errors name `where`.
std::shared_ptr<Detector> detector_from_json(const nlohmann::json& j, double lo, double hi, const std::string& where);

}  // namespace bulwark::detect
