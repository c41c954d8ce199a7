// train/distributed.h — the data-parallel half of fit(): which rows of each global batch a rank
// trains on, and what the ranks exchange per step (gradients, averaged in flat buckets, with the
// step's running totals and stop votes) and per epoch (rank 0's model and objective state after
// it validated). Single-process fit() uses none of this.
#pragma once

#include <torch/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "model/model.h"

namespace bulwark::dist {
class Group;
}

namespace bulwark::train {

// Rows [offset, offset + size) of a global batch of `global` rows: contiguous slices, sizes
// differing by at most one, disjoint over the ranks and covering the batch. A rank's slice may be
// empty (a last batch smaller than the world).
struct Shard {
  int64_t offset = 0;
  int64_t size = 0;
  int64_t global = 0;
};
Shard shard_of(int64_t global, int rank, int world_size);

// Sums over the ranks, exchanged with the gradients of every step.
struct StepTotals {
  double loss_sum = 0;  // loss * images
  double correct = 0;
  double seen = 0;        // images
  double stop_votes = 0;  // ranks whose budget ran out or that were cancelled
  double elapsed_s = 0;   // summed over ranks: / world_size is the job's clock
};

// Thread-safety: the training thread only; every call is a collective, made in the same order
// on every rank.
class DataParallel {
 public:
  // ~25 MB buckets, as PyTorch's DDP: one for every model in the zoo.
  static constexpr int64_t kBucketBytes = 25 << 20;

  DataParallel(std::shared_ptr<dist::Group> group, const model::Model& m, int64_t bucket_bytes = kBucketBytes);
  int rank() const;
  int world_size() const;

  // Rank 0's values of `facts` (name, value) compared on every rank; if any rank differs, every
  // rank throws invalid_argument (the differing ones naming what differs), instead of the ranks
  // running different numbers of steps into each other's collectives.
  void expect_agreement(const std::vector<std::pair<std::string, double>>& facts);
  // Rank 0's parameters and buffers into every rank's model.
  void broadcast_model(model::Model& m, const std::string& what);
  // Each gradient times `weight` (this rank's share of the global batch, so that the sum is the
  // gradient of the global batch's mean loss), summed over the ranks; `local` summed alongside.
  // An undefined gradient (a rank with an empty shard) counts as zero.
  StepTotals reduce_step(const StepTotals& local, double weight);
  // True on every rank if it is true on any.
  bool any(bool local, const std::string& what);
  // Rank 0's values on every rank (the size must agree).
  std::vector<double> broadcast_values(std::vector<double> values, const std::string& what);
  // Wall-clock seconds spent in reduce_step's exchange so far.
  double communication_seconds() const { return communication_s_; }

 private:
  std::shared_ptr<dist::Group> group_;
  std::vector<torch::Tensor> params_;
  std::vector<std::vector<size_t>> buckets_;  // indices into params_
  double communication_s_ = 0;
};

}  // namespace bulwark::train
