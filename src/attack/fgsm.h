// attack/fgsm.h — one gradient step: L∞ sign step (FGSM), L2 normalised step (FGM); optional
// random start (R-FGSM), after which the step is `step_size`.
#pragma once

#include "attack/base.h"

namespace bulwark::attack {

class FgsmOptions : public CommonOptions<FgsmOptions> {
 public:
  explicit FgsmOptions(double eps) : CommonOptions(eps), step_size_(eps) {}
  FgsmOptions& random_start(bool v) {
    random_start_ = v;
    return *this;
  }
  FgsmOptions& step_size(double v) {
    check_range("--step-size", v, 0, 1e6);
    step_size_ = v;
    return *this;
  }
  bool random_start() const { return random_start_; }
  double step_size() const { return step_size_; }
  nlohmann::json to_json() const;

 private:
  bool random_start_ = false;
  double step_size_;  // default eps
};

class Fgsm : public Attack {
 public:
  explicit Fgsm(FgsmOptions o) : options_(std::move(o)) {}
  std::string name() const override { return "fgsm"; }
  const Threat& threat() const override { return options_.threat(); }
  torch::Tensor perturb(const LogitsFn& f, const torch::Tensor& x, const torch::Tensor& y) override;
  nlohmann::json to_json() const override { return options_.to_json(); }
  const FgsmOptions& options() const { return options_; }

 private:
  FgsmOptions options_;
};

// The step direction for a gradient under a norm: sign (L∞) or L2-normalised.
torch::Tensor steepest_direction(const torch::Tensor& grad, Norm norm);

}  // namespace bulwark::attack
