#include "poison/cluster.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include <torch/torch.h>

#include "core/error.h"
#include "data/dataset.h"

namespace bulwark::poison {

Split1d two_means_1d(const torch::Tensor& values) {
  const int64_t n = values.numel();
  if (n < 2) throw invalid_argument("a 2-means split needs at least 2 values, got " + std::to_string(n));
  const auto [sorted, order] = values.to(torch::kFloat64).contiguous().sort();
  const double* v = sorted.data_ptr<double>();
  std::vector<double> prefix(static_cast<size_t>(n) + 1, 0.0), prefix_sq(static_cast<size_t>(n) + 1, 0.0);
  for (int64_t i = 0; i < n; ++i) {
    prefix[i + 1] = prefix[i] + v[i];
    prefix_sq[i + 1] = prefix_sq[i] + v[i] * v[i];
  }
  // Within-group SS of v[a, b): sum of squares minus n * mean^2.
  auto ss = [&](int64_t a, int64_t b) {
    const double s = prefix[b] - prefix[a];
    return (prefix_sq[b] - prefix_sq[a]) - s * s / static_cast<double>(b - a);
  };
  int64_t best_cut = 1;
  double best = std::numeric_limits<double>::infinity();
  for (int64_t cut = 1; cut < n; ++cut) {
    if (v[cut] == v[cut - 1]) continue;  // a cut between equal values would split ties
    const double w = ss(0, cut) + ss(cut, n);
    if (w < best) {
      best = w;
      best_cut = cut;
    }
  }
  Split1d out;
  if (!std::isfinite(best)) {  // every value equal: one group, no separation
    out.threshold = v[n - 1];
    out.high = torch::zeros({n}, torch::kBool);
    out.low_mean = out.high_mean = v[0];
    return out;
  }
  out.threshold = 0.5 * (v[best_cut - 1] + v[best_cut]);
  out.high_count = n - best_cut;
  out.low_mean = prefix[best_cut] / static_cast<double>(best_cut);
  out.high_mean = (prefix[n] - prefix[best_cut]) / static_cast<double>(n - best_cut);
  out.high = torch::zeros({n}, torch::kBool);
  out.high.index_fill_(0, order.narrow(0, best_cut, n - best_cut), true);
  const double pooled_sd = std::sqrt(std::max(best, 0.0) / static_cast<double>(n));
  out.separation = pooled_sd > 0 ? (out.high_mean - out.low_mean) / pooled_sd : std::numeric_limits<double>::infinity();
  return out;
}

namespace {

// Squared distances of every row of x to each centre: [n, k].
torch::Tensor squared_distances(const torch::Tensor& x, const torch::Tensor& centres) {
  return (x.pow(2).sum(1, true) - 2 * x.matmul(centres.t()) + centres.pow(2).sum(1).unsqueeze(0)).clamp_min(0);
}

KMeans2 lloyd(const torch::Tensor& x, torch::Tensor centres) {
  torch::Tensor assignment;
  for (int iter = 0; iter < 100; ++iter) {
    const torch::Tensor next = squared_distances(x, centres).argmin(1);
    if (assignment.defined() && next.equal(assignment)) break;
    assignment = next;
    for (int64_t k = 0; k < 2; ++k) {
      const torch::Tensor members = assignment.eq(k);
      if (members.any().item<bool>()) centres[k] = x.index({members}).mean(0);
    }
  }
  KMeans2 out;
  out.assignment = assignment;
  out.centres = centres;
  out.inertia = squared_distances(x, centres).gather(1, assignment.unsqueeze(1)).sum().item<double>();
  return out;
}

}  // namespace

KMeans2 kmeans2(const torch::Tensor& x_in, int64_t restarts, uint64_t seed) {
  const torch::Tensor x = x_in.to(torch::kFloat64).contiguous();
  const int64_t n = x.size(0);
  if (n < 2) throw invalid_argument("k-means needs at least 2 rows, got " + std::to_string(n));
  if (restarts < 1) throw invalid_argument("k-means restarts must be at least 1, got " + std::to_string(restarts));
  std::mt19937_64 rng(seed);
  KMeans2 best;
  best.inertia = std::numeric_limits<double>::infinity();
  for (int64_t r = 0; r < restarts; ++r) {
    // k-means++: the first centre uniform, the second drawn in proportion to squared distance.
    const int64_t first = std::uniform_int_distribution<int64_t>(0, n - 1)(rng);
    const torch::Tensor d2 = (x - x[first]).pow(2).sum(1).contiguous();
    const double total = d2.sum().item<double>();
    int64_t second = (first + 1) % n;
    if (total > 0) {
      double u = std::uniform_real_distribution<double>(0.0, total)(rng);
      const double* w = d2.data_ptr<double>();
      for (int64_t i = 0; i < n; ++i) {
        u -= w[i];
        if (u <= 0 && w[i] > 0) {
          second = i;
          break;
        }
      }
    }
    KMeans2 run = lloyd(x, torch::stack({x[first], x[second]}).clone());
    if (run.inertia < best.inertia) best = std::move(run);
  }
  return best;
}

double silhouette(const torch::Tensor& x_in, const torch::Tensor& assignment, int64_t sample, uint64_t seed) {
  const torch::Tensor x = x_in.to(torch::kFloat64).contiguous();
  const int64_t n = x.size(0);
  const torch::Tensor in1 = assignment.eq(1);
  const int64_t n1 = in1.sum().item<int64_t>(), n0 = n - n1;
  if (n0 == 0 || n1 == 0) return 0.0;
  torch::Tensor at = data::seeded_permutation(n, seed);
  if (sample < n) at = at.narrow(0, 0, sample);
  const torch::Tensor d = torch::cdist(x.index_select(0, at), x);  // [m, n]
  const torch::Tensor sum1 = d.index({torch::indexing::Slice(), in1}).sum(1);
  const torch::Tensor sum0 = d.sum(1) - sum1;
  const torch::Tensor own = assignment.index_select(0, at).eq(1);
  const torch::Tensor own_n = torch::where(own, torch::full_like(sum1, n1), torch::full_like(sum1, n0));
  // a: mean distance to the rest of its own cluster (self excluded); b: to the other cluster.
  const torch::Tensor a = torch::where(own, sum1, sum0) / (own_n - 1).clamp_min(1);
  const torch::Tensor b = torch::where(own, sum0 / n0, sum1 / n1);
  // A point alone in its cluster has silhouette 0 by definition.
  const torch::Tensor s = torch::where(own_n.gt(1), (b - a) / torch::max(a, b).clamp_min(1e-300), torch::zeros_like(a));
  return s.mean().item<double>();
}

torch::Tensor pca_project(const torch::Tensor& x_in, int64_t dims) {
  const torch::Tensor x = x_in.to(torch::kFloat64);
  const torch::Tensor centred = x - x.mean(0, true);
  const auto svd = torch::linalg_svd(centred, /*full_matrices=*/false);
  const torch::Tensor vh = std::get<2>(svd);
  const int64_t k = std::min<int64_t>(dims, vh.size(0));
  return centred.matmul(vh.narrow(0, 0, k).t());
}

torch::Tensor top_direction(const torch::Tensor& x_in) {
  const torch::Tensor x = x_in.to(torch::kFloat64);
  torch::Tensor v = std::get<2>(torch::linalg_svd(x, /*full_matrices=*/false))[0].clone();
  const double mean_projection = x.matmul(v).mean().item<double>();
  // Centred data projects to mean 0: orient by the largest entry instead.
  const bool flip = std::abs(mean_projection) > 1e-9 * (1 + x.abs().max().item<double>())
                        ? mean_projection < 0
                        : v[v.abs().argmax()].item<double>() < 0;
  return flip ? -v : v;
}

}  // namespace bulwark::poison
