// dist/group.h — one process's membership of a data-parallel job: a c10d ProcessGroupGloo over a
// TCPStore that rank 0 hosts at master_addr:master_port. Every collective waits at most
// Config::timeout_s; any failure (a peer exited, was killed, hangs, or cannot be reached) throws
// an unavailable Error that names this rank and the timeout, so no rank is left hanging.
//
// Thread-safety: collectives are called from one thread (the training thread), in the same order
// on every rank — the contract of c10d itself.
#pragma once

#include <torch/types.h>

#include <memory>
#include <string>
#include <vector>

#include "dist/config.h"

namespace bulwark::dist {

class Group {
 public:
  // Rendezvous: returns once all config.world_size ranks have joined, or throws after timeout_s.
  static std::shared_ptr<Group> connect(const Config& config);
  ~Group();
  Group(const Group&) = delete;
  Group& operator=(const Group&) = delete;

  int rank() const { return config_.rank; }
  int world_size() const { return config_.world_size; }
  const Config& config() const { return config_; }

  // In place, each tensor (contiguous, CPU) summed over the ranks; the tensors are reduced
  // concurrently. `what` names the exchange in an error ("gradients").
  void all_reduce_sum(std::vector<torch::Tensor>& tensors, const std::string& what);
  // In place: every rank ends with root's values.
  void broadcast(std::vector<torch::Tensor>& tensors, int root, const std::string& what);
  void barrier(const std::string& what);

 private:
  struct Impl;
  Group(const Config& config, std::unique_ptr<Impl> impl);
  Config config_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace bulwark::dist
