// attack/square.h — Square Attack (Andriushchenko et al. 2020), score-based black-box, L∞ and
// L2, following the AutoAttack reference (autoattack/square.py): margin loss, the paper's p
// schedule rescaled to the query budget, vertical-stripe (L∞) or pseudo-Gaussian-block (L2)
// initialisation. It only calls the score function: a local model, or a remote endpoint. Its
// queries run on f.search_forward() (for a model, its frozen inference-optimized copy,
// model/frozen_forward.h), or for L∞ on f.window_forward() when the model qualifies: each L∞ query
// changes one window of every standing image, and model/window_forward.h recomputes only what that
// window reaches. Whether a point is fooled is decided by f itself.
#pragma once

#include "attack/base.h"

namespace bulwark::attack {

class SquareOptions : public CommonOptions<SquareOptions> {
 public:
  explicit SquareOptions(double eps) : CommonOptions(eps) {}
  SquareOptions& queries(int64_t v);  // per point and restart, default 5000
  SquareOptions& p_init(double v);    // default 0.8
  SquareOptions& restarts(int64_t v);

  int64_t queries() const { return queries_; }
  double p_init() const { return p_init_; }
  int64_t restarts() const { return restarts_; }
  nlohmann::json to_json() const;

 private:
  int64_t queries_ = 5000;
  double p_init_ = 0.8;
  int64_t restarts_ = 1;
};

class Square : public Attack {
 public:
  explicit Square(SquareOptions o) : options_(std::move(o)) {}
  std::string name() const override { return "square"; }
  const Threat& threat() const override { return options_.threat(); }
  bool black_box() const override { return true; }
  torch::Tensor perturb(const LogitsFn& f, const torch::Tensor& x, const torch::Tensor& y) override;
  nlohmann::json to_json() const override { return options_.to_json(); }

 private:
  // Returns x_best for each point and adds the queries spent to `used`.
  // `engine` (may be null) scores L∞ queries incrementally; else f does.
  torch::Tensor run_linf(const LogitsFn& f, model::WindowForward* engine, const torch::Tensor& x,
                         const torch::Tensor& y, torch::Generator& gen, torch::Tensor& used);
  torch::Tensor run_l2(const LogitsFn& f, const torch::Tensor& x, const torch::Tensor& y, torch::Generator& gen,
                       torch::Tensor& used);
  // A candidate for the points still standing (their clean and current best inputs) at query `it`;
  // it sets `changed` to where the candidates differ from the best inputs (the image, if unknown).
  using Proposal =
      std::function<torch::Tensor(const torch::Tensor&, const torch::Tensor&, int64_t, model::Window& changed)>;
  // The search both norms share: query the proposal, keep it where the margin loss improves or the
  // point is misclassified, stop when every point is fooled or the budget is spent.
  torch::Tensor search(const LogitsFn& f, model::WindowForward* engine, const torch::Tensor& x,
                       const torch::Tensor& y, torch::Tensor x_best, const Proposal& propose, torch::Tensor& used);
  SquareOptions options_;
};

// The fraction p of pixels a square covers at iteration `it` of a `budget`-query run.
double square_p_selection(double p_init, int64_t it, int64_t budget);

}  // namespace bulwark::attack
