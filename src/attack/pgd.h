// attack/pgd.h — projected gradient descent (Madry et al.), L∞ and L2, with random start,
// restarts and a choice of loss. In evaluation mode (early_stop) a point leaves the batch as soon
// as it is misclassified, so later steps only pay for points still standing.
#pragma once

#include "attack/base.h"
#include "attack/losses.h"

namespace bulwark::attack {

class PgdOptions : public CommonOptions<PgdOptions> {
 public:
  // Defaults: 20 steps of eps/4, random start, 1 restart, cross-entropy, early stop.
  explicit PgdOptions(double eps) : CommonOptions(eps), step_size_(eps / 4) {}
  PgdOptions& steps(int64_t v);
  PgdOptions& step_size(double v);
  PgdOptions& random_start(bool v);
  PgdOptions& restarts(int64_t v);
  PgdOptions& loss(Loss v);
  PgdOptions& early_stop(bool v);  // false for adversarial training: every point takes every step

  int64_t steps() const { return steps_; }
  double step_size() const { return step_size_; }
  bool random_start() const { return random_start_; }
  int64_t restarts() const { return restarts_; }
  Loss loss() const { return loss_; }
  bool early_stop() const { return early_stop_; }
  nlohmann::json to_json() const;

 private:
  int64_t steps_ = 20;
  double step_size_;
  bool random_start_ = true;
  int64_t restarts_ = 1;
  Loss loss_ = Loss::kCrossEntropy;
  bool early_stop_ = true;
};

class Pgd : public Attack {
 public:
  explicit Pgd(PgdOptions o) : options_(std::move(o)) {}
  std::string name() const override { return "pgd"; }
  const Threat& threat() const override { return options_.threat(); }
  torch::Tensor perturb(const LogitsFn& f, const torch::Tensor& x, const torch::Tensor& y) override;
  nlohmann::json to_json() const override { return options_.to_json(); }
  const PgdOptions& options() const { return options_; }

 private:
  torch::Tensor run_once(const LogitsFn& f, const torch::Tensor& x, const torch::Tensor& y, torch::Generator& gen,
                         torch::Tensor& fooled);
  PgdOptions options_;
};

}  // namespace bulwark::attack
