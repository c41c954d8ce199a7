#include "attack/square.h"

#include <torch/torch.h>

#include <cmath>

#include "attack/losses.h"
#include "model/window_forward.h"
#include "core/error.h"

namespace bulwark::attack {
namespace {

using torch::indexing::Slice;

torch::Tensor random_sign(at::IntArrayRef shape, torch::Generator& gen) {
  return (2 * torch::rand(shape, gen) - 1).sign();
}

// The s×s window at (vh, vw) of every image and channel, as a view. Its index is spelled out here
// rather than kept in a std::vector<TensorIndex>: copying a TensorIndex reads an uninitialized bool
// for a Slice (LibTorch 1.13's header), which `make test SAN=1` stops on.
torch::Tensor window(const torch::Tensor& t, int64_t vh, int64_t vw, int64_t s) {
  return t.index({Slice(), Slice(), Slice(vh, vh + s), Slice(vw, vw + s)});
}

int64_t random_int(int64_t low, int64_t high, torch::Generator& gen) {
  return low + static_cast<int64_t>(static_cast<double>(high - low) * torch::rand({1}, gen).item<double>());
}

// margin = z_y - max_{j != y} z_j (<= 0 means misclassified); the loss minimised is the margin.
torch::Tensor margin_of(const LogitsFn& f, const torch::Tensor& x, const torch::Tensor& y, int64_t chunk) {
  return -margin_loss(forward_chunked(f, x, chunk), y);
}

torch::Tensor eta_rectangles(int64_t x, int64_t y) {
  auto delta = torch::zeros({x, y});
  int64_t c0 = x / 2, c1 = y / 2;  // x_c - 1, y_c - 1 with x_c = x // 2 + 1
  for (int64_t counter = 0; counter < std::max(x / 2 + 1, y / 2 + 1); ++counter) {
    delta.index({Slice(std::max<int64_t>(c0, 0), std::min(c0 + 2 * counter + 1, x)),
                 Slice(std::max<int64_t>(c1, 0), std::min(c1 + 2 * counter + 1, y))}) +=
        1.0 / static_cast<double>((counter + 1) * (counter + 1));
    --c0;
    --c1;
  }
  return delta / delta.pow(2).sum().sqrt();
}

torch::Tensor eta(int64_t s, torch::Generator& gen) {
  auto delta = torch::zeros({s, s});
  delta.index_put_({Slice(0, s / 2)}, eta_rectangles(s / 2, s));
  delta.index_put_({Slice(s / 2, s)}, -eta_rectangles(s - s / 2, s));
  delta = delta / delta.pow(2).sum().sqrt();
  if (torch::rand({1}, gen).item<double>() > 0.5) delta = delta.t().contiguous();
  return delta;
}

// Keeps the better of (current, candidate) per point, as the reference's update rule. Returns
// which candidates were taken.
torch::Tensor accept(const torch::Tensor& idx, const torch::Tensor& x_new, const torch::Tensor& margin,
                     torch::Tensor& x_best, torch::Tensor& margin_min, torch::Tensor& loss_min) {
  const auto loss = margin;  // margin loss
  const auto loss_cur = loss_min.index_select(0, idx);
  const auto improved = loss.lt(loss_cur);
  loss_min.index_copy_(0, idx, torch::where(improved, loss, loss_cur));
  const auto take = improved.logical_or(margin.le(0));
  margin_min.index_copy_(0, idx, torch::where(take, margin, margin_min.index_select(0, idx)));
  x_best.index_copy_(0, idx, torch::where(take.view({-1, 1, 1, 1}), x_new, x_best.index_select(0, idx)));
  return take;
}

}  // namespace

double square_p_selection(double p_init, int64_t it, int64_t budget) {
  const auto i = static_cast<int64_t>(static_cast<double>(it) / static_cast<double>(budget) * 10000);
  if (i <= 10) return p_init;
  if (i <= 50) return p_init / 2;
  if (i <= 200) return p_init / 4;
  if (i <= 500) return p_init / 8;
  if (i <= 1000) return p_init / 16;
  if (i <= 2000) return p_init / 32;
  if (i <= 4000) return p_init / 64;
  if (i <= 6000) return p_init / 128;
  if (i <= 8000) return p_init / 256;
  return p_init / 512;
}

SquareOptions& SquareOptions::queries(int64_t v) {
  if (v < 1 || v > 1000000) throw invalid_argument("--queries must be in 1..1000000, got " + std::to_string(v));
  queries_ = v;
  return *this;
}
SquareOptions& SquareOptions::p_init(double v) {
  if (!(v > 0 && v <= 1)) throw invalid_argument("--p-init must be in (0, 1], got " + std::to_string(v));
  p_init_ = v;
  return *this;
}
SquareOptions& SquareOptions::restarts(int64_t v) {
  if (v < 1 || v > 1000) throw invalid_argument("--restarts must be in 1..1000, got " + std::to_string(v));
  restarts_ = v;
  return *this;
}

nlohmann::json SquareOptions::to_json() const {
  auto j = threat_json();
  j["attack"] = "square";
  j["queries"] = queries_;
  j["p_init"] = p_init_;
  j["restarts"] = restarts_;
  j["loss"] = "margin";
  return j;
}

torch::Tensor Square::search(const LogitsFn& f, model::WindowForward* engine, const torch::Tensor& x,
                             const torch::Tensor& y, torch::Tensor x_best, const Proposal& propose,
                             torch::Tensor& used) {
  auto margin_min = engine ? -margin_loss(engine->reset(x_best), y) : margin_of(f, x_best, y, options_.batch_size());
  auto loss_min = margin_min.clone();
  used += 1;
  for (int64_t it = 0; it < options_.queries(); ++it) {
    if (it % 25 == 0) report_progress(static_cast<double>(it) / static_cast<double>(options_.queries()));
    const auto idx = margin_min.gt(0).nonzero().squeeze(1);
    if (idx.numel() == 0) break;
    model::Window changed{0, 0, x.size(2), x.size(3)};
    const auto x_new = propose(x.index_select(0, idx), x_best.index_select(0, idx), it, changed);
    const auto ys = y.index_select(0, idx);
    const auto margin = engine ? -margin_loss(engine->query(idx, x_new, changed), ys)
                               : margin_of(f, x_new, ys, options_.batch_size());
    cost_.forward_passes += idx.numel();
    used.index_add_(0, idx, torch::ones({idx.numel()}));
    const auto take = accept(idx, x_new, margin, x_best, margin_min, loss_min);
    if (engine) engine->accept(take);
  }
  return x_best;
}

torch::Tensor Square::run_linf(const LogitsFn& f, model::WindowForward* engine, const torch::Tensor& x,
                               const torch::Tensor& y, torch::Generator& gen, torch::Tensor& used) {
  const Threat& t = threat();
  const int64_t c = x.size(1), h = x.size(2), w = x.size(3), n_features = c * h * w;
  // Vertical stripes of +-eps, then one random square of +-2 eps per query (projected).
  const auto init = (x + t.eps * random_sign({x.size(0), c, 1, w}, gen)).clamp(t.lo, t.hi);
  const Proposal propose = [&](const torch::Tensor& x_curr, const torch::Tensor& x_best_curr, int64_t it,
                               model::Window& changed) {
    const double p = square_p_selection(options_.p_init(), it, options_.queries());
    int64_t s = std::max<int64_t>(std::lround(std::sqrt(p * n_features / c)), 1);
    s = std::min({s, h, w});
    const int64_t vh = random_int(0, h - s, gen), vw = random_int(0, w - s, gen);
    changed = {vh, vw, s, s};  // x_best_curr is inside the ball already: projecting moves only the window
    auto deltas = torch::zeros({c, h, w});
    deltas.index_put_({Slice(), Slice(vh, vh + s), Slice(vw, vw + s)}, 2.0 * t.eps * random_sign({c, 1, 1}, gen));
    return t.project(x_best_curr + deltas, x_curr);
  };
  return search(f, engine, x, y, init, propose, used);
}

torch::Tensor Square::run_l2(const LogitsFn& f, const torch::Tensor& x, const torch::Tensor& y, torch::Generator& gen,
                             torch::Tensor& used) {
  const Threat& t = threat();
  const int64_t n = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3), n_features = c * h * w;
  if (h < 5 || w < 5) throw invalid_argument("--attacks square with --norm l2 needs images of at least 5x5");
  // A grid of pseudo-Gaussian blocks with random signs, scaled to norm eps.
  auto delta_init = torch::zeros_like(x);
  const int64_t s0 = h / 5, sp_init = (h - s0 * 5) / 2;
  for (int64_t bh = 0, vh = sp_init; bh < h / s0; ++bh, vh += s0) {
    for (int64_t bw = 0, vw = sp_init; bw < w / s0; ++bw, vw += s0) {
      const auto block = eta(s0, gen).view({1, 1, s0, s0}) * random_sign({n, c, 1, 1}, gen);
      delta_init.index({Slice(), Slice(), Slice(vh, vh + s0), Slice(vw, vw + s0)}) += block;
    }
  }
  const auto init = (x + l2_normalize(delta_init) * t.eps).clamp(t.lo, t.hi);
  // Each query moves the mass of one window into another, keeping the total norm at eps.
  const Proposal propose = [&](const torch::Tensor& x_curr, const torch::Tensor& x_best_curr, int64_t it,
                               model::Window& /*changed: the whole image (the delta is renormalized)*/) {
    auto delta_curr = x_best_curr - x_curr;
    const double p = square_p_selection(options_.p_init(), it, options_.queries());
    int64_t s = std::max<int64_t>(std::lround(std::sqrt(p * n_features / c)), 3);
    if (s % 2 == 0) ++s;
    while (s > std::min(h, w)) s -= 2;
    const int64_t vh = random_int(0, h - s, gen), vw = random_int(0, w - s, gen);
    auto mask = torch::zeros_like(x_curr);
    window(mask, vh, vw, s).fill_(1.0);
    const auto norms_window_1 = window(delta_curr, vh, vw, s).pow(2).sum({-2, -1}, true).sqrt();
    const int64_t vh2 = random_int(0, h - s, gen), vw2 = random_int(0, w - s, gen);
    auto mask2 = torch::zeros_like(x_curr);
    window(mask2, vh2, vw2, s).fill_(1.0);
    const auto norms_image = l2_norm_keepdim(x_best_curr - x_curr);
    const auto norms_windows = l2_norm_keepdim(delta_curr * torch::max(mask, mask2));

    auto new_deltas = eta(s, gen).view({1, 1, s, s}) * random_sign({x_curr.size(0), c, 1, 1}, gen);
    new_deltas = new_deltas + window(delta_curr, vh, vw, s) / (1e-12 + norms_window_1);
    new_deltas = new_deltas / (1e-12 + new_deltas.pow(2).sum({-2, -1}, true).sqrt()) *
                 (torch::clamp_min(t.eps * t.eps - norms_image.pow(2), 0.0) / c + norms_windows.pow(2)).sqrt();
    window(delta_curr, vh2, vw2, s).zero_();
    window(delta_curr, vh, vw, s).copy_(new_deltas);
    return (x_curr + l2_normalize(delta_curr) * t.eps).clamp(t.lo, t.hi);
  };
  return search(f, nullptr, x, y, init, propose, used);
}

torch::Tensor Square::perturb(const LogitsFn& f, const torch::Tensor& x, const torch::Tensor& y) {
  cost_ = {};
  torch::NoGradGuard no_grad;
  auto gen = make_generator(options_.seed());
  torch::Tensor adv = x.clone();
  queries_ = torch::zeros({x.size(0)});
  auto standing = forward_chunked(f, x, options_.batch_size()).argmax(1).eq(y);
  cost_.forward_passes += x.size(0);
  // The queries only steer the search: they run on the window engine (L∞, a model that qualifies)
  // or the search forward (for a model, its frozen, inference-optimized copy); whether a point is
  // fooled is decided below by f itself.
  const auto engine = threat().norm == Norm::kLinf ? f.window_forward(x.size(0)) : nullptr;
  const LogitsFn query = engine ? f : LogitsFn(f.search_forward());
  for (int64_t r = 0; r < options_.restarts(); ++r) {
    const auto idx = standing.nonzero().squeeze(1);
    if (idx.numel() == 0) break;
    const auto xs = x.index_select(0, idx), ys = y.index_select(0, idx);
    auto used = torch::zeros({idx.numel()});
    const auto cand =
        threat().norm == Norm::kLinf ? run_linf(query, engine.get(), xs, ys, gen, used) : run_l2(query, xs, ys, gen, used);
    queries_.index_add_(0, idx, used);
    const auto fooled = forward_chunked(f, cand, options_.batch_size()).argmax(1).ne(ys);
    cost_.forward_passes += idx.numel();
    const auto hits = fooled.nonzero().squeeze(1);
    adv.index_copy_(0, idx.index_select(0, hits), cand.index_select(0, hits));
    standing.index_fill_(0, idx.index_select(0, hits), false);
  }
  return adv;
}

}  // namespace bulwark::attack
