#include "poison/neighbours.h"

#include <limits>

#include <torch/torch.h>

#include "core/error.h"

namespace bulwark::poison {

torch::Tensor other_label_fraction(const data::Dataset& d, const torch::Tensor& queries, const torch::Tensor& reference,
                                   int64_t k) {
  if (k < 1 || k + 1 > reference.size(0)) {
    throw invalid_argument("nearest neighbours: k = " + std::to_string(k) + " needs more than k reference rows, got " +
                           std::to_string(reference.size(0)));
  }
  torch::NoGradGuard no_grad;
  const torch::Tensor r = d.inputs(reference).flatten(1);
  const torch::Tensor r_norm = r.pow(2).sum(1).unsqueeze(0);
  const torch::Tensor r_labels = d.labels.index_select(0, reference);
  std::vector<torch::Tensor> out;
  constexpr int64_t kChunk = 32;  // [chunk, reference] distances at a time
  for (int64_t at = 0; at < queries.size(0); at += kChunk) {
    const torch::Tensor ids = queries.narrow(0, at, std::min(kChunk, queries.size(0) - at));
    const torch::Tensor q = d.inputs(ids).flatten(1);
    torch::Tensor d2 = q.pow(2).sum(1, true) - 2 * q.matmul(r.t()) + r_norm;
    // Self excluded by row id (a duplicate image elsewhere in the set still counts).
    d2.masked_fill_(ids.unsqueeze(1).eq(reference.unsqueeze(0)), std::numeric_limits<float>::infinity());
    // Re-rank the nearest candidates by a distance that drops the largest 5 % of per-pixel squared
    // differences: a small stamped trigger is all in those, so patched copies of one class stop
    // finding each other first (their shared patch) rather than the unpatched images they look like.
    const int64_t candidates = std::min<int64_t>(std::max<int64_t>(8 * k, 64), reference.size(0) - 1);
    const torch::Tensor cand = std::get<1>(d2.topk(candidates, 1, /*largest=*/false));  // [q, m]
    const torch::Tensor diff = (q.unsqueeze(1) - r.index_select(0, cand.flatten()).view({ids.size(0), candidates, -1})).pow(2);
    torch::Tensor trimmed = diff.sum(2) - std::get<0>(diff.topk(diff.size(2) / 20, 2)).sum(2);
    trimmed.masked_fill_(ids.unsqueeze(1).eq(reference.index_select(0, cand.flatten()).view_as(cand)),
                         std::numeric_limits<float>::infinity());
    const torch::Tensor nearest = cand.gather(1, std::get<1>(trimmed.topk(k, 1, /*largest=*/false)));
    const torch::Tensor labels = r_labels.index_select(0, nearest.flatten()).view({ids.size(0), k});
    const torch::Tensor own = d.labels.index_select(0, ids).unsqueeze(1);
    out.push_back(labels.ne(own).to(torch::kFloat64).mean(1));
  }
  return out.empty() ? torch::zeros({0}, torch::kFloat64) : torch::cat(out);
}

}  // namespace bulwark::poison
