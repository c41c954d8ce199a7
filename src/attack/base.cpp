#include "attack/base.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/autocast_mode.h>
#include <torch/torch.h>

#include "core/error.h"
#include "model/frozen_forward.h"
#include "model/window_forward.h"
#include "model/model.h"

namespace bulwark::attack {

namespace {

// CPU autocast to bfloat16 for one call. The switches are thread-local; the previous ones come back
// on exit, and the cast cache goes with the outermost region.
class Bf16Autocast {
 public:
  Bf16Autocast() : was_on_(at::autocast::is_cpu_enabled()), was_dtype_(at::autocast::get_autocast_cpu_dtype()) {
    at::autocast::set_cpu_enabled(true);
    at::autocast::set_autocast_cpu_dtype(at::kBFloat16);
    at::autocast::increment_nesting();
  }
  ~Bf16Autocast() {
    if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
    at::autocast::set_cpu_enabled(was_on_);
    at::autocast::set_autocast_cpu_dtype(was_dtype_);
  }
  Bf16Autocast(const Bf16Autocast&) = delete;
  Bf16Autocast& operator=(const Bf16Autocast&) = delete;

 private:
  bool was_on_;
  at::ScalarType was_dtype_;
};

}  // namespace

Precision parse_precision(const std::string& s, const char* flag) {
  if (s == "fp32") return Precision::kFp32;
  if (s == "bf16") return Precision::kBf16;
  throw invalid_argument(std::string(flag) + " must be fp32 or bf16, got '" + s + "'");
}

std::string to_string(Precision p) { return p == Precision::kBf16 ? "bf16" : "fp32"; }

LogitsFn logits_of(const model::Model& m, Precision precision) {
  const auto frozen = [&m]() -> LogitsFn::Forward {
    auto copy = std::make_shared<const model::FrozenForward>(m);
    return [copy](const torch::Tensor& x) { return (*copy)(x); };
  };
  const auto window = [&m](int64_t n) -> std::shared_ptr<model::WindowForward> {
    return model::WindowForward::create(m, n);
  };
  // Gradient passes run on a channels-last copy of the input (model::channels_last), so the
  // convolutions run in oneDNN's NHWC and the pools in ATen's NHWC kernels: ~2x faster for the `cnn`
  // (bench/attack_throughput). Their sums run in another order than the NCHW forward's, so their
  // logits are not the verdict: exact_gradient_pass is false, and a point they find misclassified
  // is rechecked by the forward before it is retired. Passes without autograd stay NCHW. A model
  // with channels_last_gradients() off runs them in NCHW, and in fp32 they are exact.
  const bool cl = m.channels_last_gradients();
  // Off, an input that arrives with channels-last strides is given NCHW ones, so no operator takes
  // the channels-last paths (model/conv2d.h, model/conv_pool.h) and the passes stay exact.
  const auto layout = [cl](const torch::Tensor& x) {
    if (cl) return model::channels_last(x);
    return x.suggest_memory_format() == at::MemoryFormat::ChannelsLast ? x.clone(at::MemoryFormat::Contiguous) : x;
  };
  if (precision == Precision::kFp32) {
    return LogitsFn(
               [&m, layout](const torch::Tensor& x) {
                 model::EvalMode eval(m);
                 if (!torch::GradMode::is_enabled()) return m.logits(x);
                 return m.logits(layout(x));
               },
               /*exact_gradient_pass=*/!cl)
        .with_search_forward(frozen)
        .with_window_forward(window);
  }
  const auto bf16_under_autograd = [&m, layout](const torch::Tensor& x) {
    model::EvalMode eval(m);
    if (!torch::GradMode::is_enabled()) return m.logits(x);
    Bf16Autocast bf16;
    return m.logits(layout(x)).to(torch::kFloat);
  };
  return LogitsFn(bf16_under_autograd, /*exact_gradient_pass=*/false)
      .with_search_forward(frozen)
      .with_window_forward(window);
}

InputGradient input_gradient(const LogitsFn& f, const torch::Tensor& x, const ChunkLoss& loss, int64_t chunk) {
  torch::AutoGradMode enable(true);
  const int64_t n = x.size(0);
  if (n <= chunk) {
    auto xr = x.detach().requires_grad_(true);
    auto logits = f(xr);
    auto per_sample = loss(logits, 0, n);
    auto grad = torch::autograd::grad({per_sample.sum()}, {xr})[0];
    return {grad.detach(), logits.detach(), per_sample.detach()};
  }
  std::vector<torch::Tensor> grads, logits, losses;
  for (int64_t s = 0; s < n; s += chunk) {
    const int64_t len = std::min(chunk, n - s);
    auto xr = x.narrow(0, s, len).detach().requires_grad_(true);
    auto z = f(xr);
    auto per_sample = loss(z, s, len);
    grads.push_back(torch::autograd::grad({per_sample.sum()}, {xr})[0].detach());
    logits.push_back(z.detach());
    losses.push_back(per_sample.detach());
  }
  return {torch::cat(grads), torch::cat(logits), torch::cat(losses)};
}

torch::Tensor forward_chunked(const LogitsFn& f, const torch::Tensor& x, int64_t chunk) {
  torch::NoGradGuard no_grad;
  if (x.size(0) <= chunk) return f(x);
  std::vector<torch::Tensor> out;
  for (int64_t s = 0; s < x.size(0); s += chunk) out.push_back(f(x.narrow(0, s, std::min(chunk, x.size(0) - s))));
  return torch::cat(out);
}

torch::Tensor confirmed_misclassified(const LogitsFn& f, const torch::Tensor& x, const torch::Tensor& y,
                                      const torch::Tensor& gradient_logits, int64_t chunk, AttackCost& cost) {
  torch::NoGradGuard no_grad;
  auto wrong = gradient_logits.argmax(1).ne(y);
  if (f.exact_gradient_pass()) return wrong;
  const auto flagged = wrong.nonzero().squeeze(1);
  if (flagged.numel() == 0) return wrong;
  const auto recheck = forward_chunked(f, x.index_select(0, flagged), chunk).argmax(1).ne(y.index_select(0, flagged));
  cost.forward_passes += flagged.numel();
  wrong.index_copy_(0, flagged, recheck);
  return wrong;
}

torch::Generator make_generator(uint64_t seed) { return at::make_generator<at::CPUGeneratorImpl>(seed); }

void check_range(const char* flag, double v, double lo, double hi) {
  if (!(v >= lo && v <= hi)) {
    throw invalid_argument(std::string(flag) + " must be in [" + std::to_string(lo) + ", " + std::to_string(hi) +
                           "], got " + std::to_string(v));
  }
}

}  // namespace bulwark::attack
