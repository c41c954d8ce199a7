// poison/cluster.h — the small clustering kit the scan needs, on double tensors: the exact 2-means
// split of 1-D values, seeded k-means (k = 2, k-means++ starts, restarts), the silhouette
// coefficient, and a PCA projection. Deterministic given a seed.
#pragma once

#include <cstdint>

#include <torch/types.h>

namespace bulwark::poison {

// The split of 1-D values into a low and a high group that minimises the within-group sum of
// squares (exact: every cut of the sorted values is tried). `separation` is the distance between
// the two means over the pooled within-group standard deviation: about 2.65 for one Gaussian
// (any cut of one bump), far more for two bumps apart.
struct Split1d {
  double threshold = 0;     // values above it are the high group
  torch::Tensor high;       // bool [n]
  int64_t high_count = 0;
  double low_mean = 0, high_mean = 0;
  double separation = 0;
};
Split1d two_means_1d(const torch::Tensor& values);

struct KMeans2 {
  torch::Tensor assignment;  // int64 [n], 0 or 1
  torch::Tensor centres;     // double [2, d]
  double inertia = 0;        // within-cluster sum of squares of the best restart
};
// Lloyd's algorithm from k-means++ starts (Arthur & Vassilvitskii 2007), `restarts` times; the
// lowest inertia wins. x is [n, d], n >= 2.
KMeans2 kmeans2(const torch::Tensor& x, int64_t restarts, uint64_t seed);

// Mean silhouette (Rousseeuw 1987) of a two-cluster assignment, over at most `sample` points drawn
// by the seed (distances to every point, as scikit-learn's sample_size does). 0 when a cluster is
// empty.
double silhouette(const torch::Tensor& x, const torch::Tensor& assignment, int64_t sample, uint64_t seed);

// x centred and projected on its top `dims` principal directions: [n, min(dims, d, n)].
torch::Tensor pca_project(const torch::Tensor& x, int64_t dims);

// The top right singular vector of x (its first principal direction when x is centred); its sign
// makes the mean projection of x non-negative, so runs agree.
torch::Tensor top_direction(const torch::Tensor& x);

}  // namespace bulwark::poison
