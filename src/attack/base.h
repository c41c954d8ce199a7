// attack/base.h — what every attack shares: the classifier as a function, the Attack interface,
// options common to all attacks, and the input-gradient helper.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>

#include <nlohmann/json.hpp>
#include <torch/types.h>

#include "attack/precision.h"
#include "attack/threat.h"

namespace bulwark::model {
class Model;
class WindowForward;
struct Window;
}

namespace bulwark::attack {

// The classifier as attacks see it: a batch [N, C, H, W] -> scores [N, K]. White-box attacks
// need it differentiable w.r.t. the input (model logits, or a BPDA wrapper); black-box attacks
// only call it (a local model or a remote endpoint). Any callable converts to one.
//
// exact_gradient_pass() says whether logits computed under autograd are the ones a pass without
// autograd (every verdict) gives. It is false for logits_of(m), whose gradient passes run in
// channels-last (fp32: the same model, its sums in another order) or in bfloat16, unless the model's
// channels_last_gradients() is off and the precision fp32; attacks then recheck a point before
// retiring it (confirmed_misclassified). A wrapper of a LogitsFn passes the flag on.
//
// search_forward() is the function for forward passes whose output only steers a search and decides
// nothing (Square's queries): for logits_of(m) a frozen, inference-optimized copy of the model
// (model/frozen_forward.h, equal to the logits up to float rounding), built from the model's weights
// when it is called; for any other LogitsFn the LogitsFn itself. Verdicts never use it.
//
// window_forward(n) is, for logits_of(m), model::WindowForward::create(m, n): logits of images that
// differ from cached ones inside one window, for Square's L∞ queries (model/window_forward.h); null
// when the model does not qualify, and for any other LogitsFn (a wrapper computes something else).
class LogitsFn {
 public:
  LogitsFn() = default;
  template <class F, class = std::enable_if_t<!std::is_same_v<std::decay_t<F>, LogitsFn> &&
                                              std::is_invocable_r_v<torch::Tensor, F&, const torch::Tensor&>>>
  LogitsFn(F f, bool exact_gradient_pass = true)  // NOLINT(google-explicit-constructor): a callable is one
      : f_(std::move(f)), exact_gradient_pass_(exact_gradient_pass) {}

  using Forward = std::function<torch::Tensor(const torch::Tensor&)>;

  torch::Tensor operator()(const torch::Tensor& x) const { return f_(x); }
  bool exact_gradient_pass() const { return exact_gradient_pass_; }
  explicit operator bool() const { return static_cast<bool>(f_); }

  Forward search_forward() const { return make_search_ ? make_search_() : f_; }
  LogitsFn& with_search_forward(std::function<Forward()> make) {
    make_search_ = std::move(make);
    return *this;
  }

  using MakeWindowForward = std::function<std::shared_ptr<model::WindowForward>(int64_t)>;
  std::shared_ptr<model::WindowForward> window_forward(int64_t n) const {
    return make_window_ ? make_window_(n) : nullptr;
  }
  LogitsFn& with_window_forward(MakeWindowForward make) {
    make_window_ = std::move(make);
    return *this;
  }

 private:
  Forward f_;
  bool exact_gradient_pass_ = true;
  std::function<Forward()> make_search_;
  MakeWindowForward make_window_;
};

// Throws invalid_argument naming `flag` unless lo <= v <= hi.
void check_range(const char* flag, double v, double lo, double hi);

// Logits of a Model, each call in eval mode (model::EvalMode), whatever mode the model is in
// between calls: attacks see the model as it is deployed and leave its BatchNorm statistics
// alone. Callers freeze its parameters (model::FrozenParameters) while attacking.
LogitsFn logits_of(const model::Model& m, Precision precision = Precision::kFp32);

// Cost counters of the last perturb() call.
struct AttackCost {
  int64_t gradient_passes = 0;  // images x (forward + backward)
  int64_t forward_passes = 0;   // images x forward only (queries, checks)
};

class Attack {
 public:
  virtual ~Attack() = default;
  virtual std::string name() const = 0;
  virtual const Threat& threat() const = 0;
  virtual bool black_box() const { return false; }
  // Adversarial points for (x, y): same shape as x, inside the threat's ball and range. Points
  // the attack could not flip are returned at its best attempt (or x itself). Deterministic
  // given the options' seed.
  virtual torch::Tensor perturb(const LogitsFn& f, const torch::Tensor& x, const torch::Tensor& y) = 0;
  virtual nlohmann::json to_json() const = 0;
  const AttackCost& cost() const { return cost_; }
  // Black-box: per-sample queries used in the last perturb() (empty for white-box attacks).
  const torch::Tensor& queries() const { return queries_; }
  // Called with the fraction of the attack's budget spent, for progress bars.
  void on_progress(std::function<void(double)> cb) { progress_ = std::move(cb); }

 protected:
  void report_progress(double fraction) const {
    if (progress_) progress_(fraction);
  }
  AttackCost cost_;
  torch::Tensor queries_;
  std::function<void(double)> progress_;
};

// Threat, seed and batch size, shared by every options struct:
// Options(eps).norm(Norm::kL2).range(0, 1).seed(3). Values are validated when set; errors name the
// CLI flag. batch_size bounds memory and sets the speed: an attack takes any number of points and
// computes over the ones still standing in chunks of batch_size, so chunks stay full as points fall.
template <typename Derived>
class CommonOptions {
 public:
  explicit CommonOptions(double eps) {
    threat_.eps = eps;
    threat_.validate();
  }
  Derived& norm(Norm n) {
    threat_.norm = n;
    return self();
  }
  Derived& range(double lo, double hi) {
    threat_.lo = lo;
    threat_.hi = hi;
    threat_.validate();
    return self();
  }
  Derived& seed(uint64_t s) {
    seed_ = s;
    return self();
  }
  Derived& batch_size(int64_t b) {
    check_range("--batch", static_cast<double>(b), 1, 65536);
    batch_size_ = b;
    return self();
  }
  const Threat& threat() const { return threat_; }
  uint64_t seed() const { return seed_; }
  int64_t batch_size() const { return batch_size_; }

 protected:
  nlohmann::json threat_json() const {
    return {{"norm", to_string(threat_.norm)}, {"eps", threat_.eps}, {"range", {threat_.lo, threat_.hi}}, {"seed", seed_}};
  }

 private:
  Derived& self() { return static_cast<Derived&>(*this); }
  Threat threat_;
  uint64_t seed_ = 0;
  int64_t batch_size_ = 256;  // as SuiteSettings::batch_size (attack/factory.h)
};

struct InputGradient {
  torch::Tensor grad;    // d(sum of per-sample loss)/dx, [N, C, H, W]
  torch::Tensor logits;  // detached
  torch::Tensor loss;    // detached per-sample loss [N]
};

// Per-sample loss of the logits of rows [start, start + len) of the batch.
using ChunkLoss = std::function<torch::Tensor(const torch::Tensor& logits, int64_t start, int64_t len)>;

// Forward and backward passes through f at x, `chunk` rows at a time.
InputGradient input_gradient(const LogitsFn& f, const torch::Tensor& x, const ChunkLoss& loss, int64_t chunk);
// Forward passes without autograd, `chunk` rows at a time.
torch::Tensor forward_chunked(const LogitsFn& f, const torch::Tensor& x, int64_t chunk);

// Early stopping's test: which points of x the logits of a gradient pass at x call misclassified
// (argmax != y) that a forward pass without autograd (the pass every verdict uses) misclassifies
// too. When f's gradient passes are exact the two agree and nothing is recomputed; with bf16
// gradient passes (attack/precision.h) the flagged points are rechecked, which keeps in the attack
// a point that bf16 rounding alone had flipped. The recheck costs a forward of the flagged points
// only, counted in cost.forward_passes.
torch::Tensor confirmed_misclassified(const LogitsFn& f, const torch::Tensor& x, const torch::Tensor& y,
                                      const torch::Tensor& gradient_logits, int64_t chunk, AttackCost& cost);

// A CPU generator seeded for one attack run.
torch::Generator make_generator(uint64_t seed);

}  // namespace bulwark::attack
