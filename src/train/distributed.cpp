#include "train/distributed.h"

#include <torch/torch.h>

#include <chrono>
#include <cstdio>

#include "core/error.h"
#include "dist/group.h"

namespace bulwark::train {

Shard shard_of(int64_t global, int rank, int world_size) {
  const int64_t base = global / world_size, extra = global % world_size;
  const int64_t r = rank;
  return {r * base + std::min(r, extra), base + (r < extra ? 1 : 0), global};
}

DataParallel::DataParallel(std::shared_ptr<dist::Group> group, const model::Model& m, int64_t bucket_bytes)
    : group_(std::move(group)), params_(m.parameters()) {
  int64_t bytes = 0;
  for (size_t i = 0; i < params_.size(); ++i) {
    const int64_t b = params_[i].numel() * static_cast<int64_t>(params_[i].element_size());
    if (buckets_.empty() || (bytes > 0 && bytes + b > bucket_bytes)) {
      buckets_.emplace_back();
      bytes = 0;
    }
    buckets_.back().push_back(i);
    bytes += b;
  }
}

int DataParallel::rank() const { return group_->rank(); }
int DataParallel::world_size() const { return group_->world_size(); }

void DataParallel::expect_agreement(const std::vector<std::pair<std::string, double>>& facts) {
  std::vector<double> mine;
  for (const auto& f : facts) mine.push_back(f.second);
  const auto rank0 = broadcast_values(mine, "the job's shape");
  std::string differences;
  for (size_t i = 0; i < facts.size(); ++i) {
    if (rank0[i] == mine[i]) continue;
    char buf[160];
    std::snprintf(buf, sizeof buf, "%s%s %.17g here, %.17g on rank 0", differences.empty() ? "" : "; ",
                  facts[i].first.c_str(), mine[i], rank0[i]);
    differences += buf;
  }
  const std::string who = "rank " + std::to_string(rank()) + " of " + std::to_string(world_size()) + ": ";
  if (!any(!differences.empty(), "the job's shape")) return;
  if (!differences.empty()) {
    throw invalid_argument(who + "ranks disagree: " + differences +
                           " (every rank needs the same data, options and --seed)");
  }
  throw invalid_argument(who + "another rank's data or options differ from rank 0's (see its error)");
}

void DataParallel::broadcast_model(model::Model& m, const std::string& what) {
  model::ModelState s = m.snapshot();
  std::vector<torch::Tensor> all = s.parameters;
  all.insert(all.end(), s.buffers.begin(), s.buffers.end());
  for (auto& t : all) t = t.contiguous();
  group_->broadcast(all, 0, what);
  if (rank() == 0) return;
  for (size_t i = 0; i < s.parameters.size(); ++i) s.parameters[i] = all[i];
  for (size_t i = 0; i < s.buffers.size(); ++i) s.buffers[i] = all[s.parameters.size() + i];
  m.restore(s);
}

StepTotals DataParallel::reduce_step(const StepTotals& local, double weight) {
  torch::NoGradGuard no_grad;
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<torch::Tensor> flat;
  flat.reserve(buckets_.size() + 1);
  for (const auto& bucket : buckets_) {
    std::vector<torch::Tensor> parts;
    for (size_t i : bucket) {
      const auto& g = params_[i].grad();
      parts.push_back(g.defined() ? g.reshape(-1) : torch::zeros({params_[i].numel()}, params_[i].options()));
    }
    flat.push_back(torch::cat(parts).mul_(weight));
  }
  auto totals =
      torch::tensor({local.loss_sum, local.correct, local.seen, local.stop_votes, local.elapsed_s}, torch::kFloat64);
  flat.push_back(totals);
  group_->all_reduce_sum(flat, "gradients");
  for (size_t k = 0; k < buckets_.size(); ++k) {
    int64_t offset = 0;
    for (size_t i : buckets_[k]) {
      auto& p = params_[i];
      const auto summed = flat[k].narrow(0, offset, p.numel()).view(p.sizes());
      if (p.grad().defined()) {
        p.mutable_grad().copy_(summed);
      } else {
        p.mutable_grad() = summed.clone();
      }
      offset += p.numel();
    }
  }
  communication_s_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const auto* v = totals.data_ptr<double>();
  return {v[0], v[1], v[2], v[3], v[4]};
}

bool DataParallel::any(bool local, const std::string& what) {
  std::vector<torch::Tensor> t{torch::tensor({local ? 1.0 : 0.0}, torch::kFloat64)};
  group_->all_reduce_sum(t, what);
  return t[0].item<double>() > 0;
}

std::vector<double> DataParallel::broadcast_values(std::vector<double> values, const std::string& what) {
  if (values.empty()) return values;
  std::vector<torch::Tensor> t{torch::tensor(values, torch::kFloat64)};
  group_->broadcast(t, 0, what);
  const auto* v = t[0].data_ptr<double>();
  return std::vector<double>(v, v + values.size());
}

}  // namespace bulwark::train
