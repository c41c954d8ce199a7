// defense/objectives.h — adversarial training objectives for train::fit: what the batch is trained
// on (adversarial inputs made on the fly) and with which loss.
#pragma once

#include <string>
#include <vector>

#include "attack/precision.h"
#include "attack/threat.h"
#include "train/trainer.h"

namespace bulwark::defense {

// Shared by every method: the threat, eps warm-up and a seed for the inner attack.
struct AdversarialSettings {
  attack::Threat threat;       // norm, eps (the target eps after warm-up), range
  double warmup_epochs = 0;    // eps ramps linearly from 0 over this many epochs
  uint64_t seed = 0;
  // Of the inner maximisation's gradient passes (attack::Precision); the training step is fp32.
  attack::Precision precision = attack::Precision::kFp32;
  double eps_at(const train::StepContext& ctx) const;
};

// PGD-AT (Madry et al. 2018): train on PGD-k points; optionally mix in the clean loss.
class PgdAtObjective : public train::Objective {
 public:
  PgdAtObjective(AdversarialSettings s, int64_t steps, double step_size_over_eps = 0.25, double clean_weight = 0);
  std::string name() const override { return "pgd-at"; }
  train::StepOutput step(model::Model& m, const torch::Tensor& x, const torch::Tensor& y,
                         const train::StepContext& ctx) override;
  nlohmann::json to_json() const override;

 private:
  AdversarialSettings s_;
  int64_t steps_;
  double step_ratio_;
  double clean_weight_;
};

// TRADES (Zhang et al. 2019): CE(f(x), y) + beta * KL(f(x) || f(x')), x' maximising the KL.
class TradesObjective : public train::Objective {
 public:
  TradesObjective(AdversarialSettings s, double beta, int64_t steps = 7, double step_size_over_eps = 0.25);
  std::string name() const override { return "trades"; }
  train::StepOutput step(model::Model& m, const torch::Tensor& x, const torch::Tensor& y,
                         const train::StepContext& ctx) override;
  nlohmann::json to_json() const override;

 private:
  AdversarialSettings s_;
  double beta_;
  int64_t steps_;
  double step_ratio_;
};

// Fast-AT (Wong et al. 2020): one FGSM step of alpha (default 1.25 eps) from a random start.
// fall_back() switches to PGD-2 after catastrophic overfitting.
class FastAtObjective : public train::Objective {
 public:
  FastAtObjective(AdversarialSettings s, double alpha_over_eps = 1.25, bool random_init = true,
                  double clean_weight = 0);
  std::string name() const override { return "fast-at"; }
  train::StepOutput step(model::Model& m, const torch::Tensor& x, const torch::Tensor& y,
                         const train::StepContext& ctx) override;
  nlohmann::json to_json() const override;
  void fall_back();
  bool fell_back() const { return fell_back_; }
  std::vector<double> shared_state() const override;  // {fell back}
  void set_shared_state(const std::vector<double>& state) override;

 private:
  AdversarialSettings s_;
  double alpha_ratio_;
  bool random_init_;
  double clean_weight_;
  bool fell_back_ = false;
};

}  // namespace bulwark::defense
