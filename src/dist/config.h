// dist/config.h — how one process learns the shape of its job: the --dist-* flags, else the
// variables a launcher sets. torchrun and the Training Operator's PyTorchJob set MASTER_ADDR,
// MASTER_PORT, WORLD_SIZE and RANK; Kubeflow Trainer's torch policy sets PET_MASTER_ADDR,
// PET_MASTER_PORT, PET_NNODES, PET_NODE_RANK and PET_NPROC_PER_NODE. Bulwark runs one process per
// node (a pod) and spreads it over the node's cores with --threads, so under Trainer the world is
// PET_NNODES processes and PET_NPROC_PER_NODE (which Trainer sets to the CPU count) is not a
// process count.
#pragma once

#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

namespace bulwark::dist {

// The --dist-* flags as parsed; a field left at its default was not given.
struct Flags {
  std::string master_addr;
  int64_t master_port = -1;
  int64_t world_size = -1;
  int64_t rank = -1;
  double timeout_s = -1;
};

struct Config {
  std::string master_addr = "127.0.0.1";  // where rank 0 listens (its TCPStore)
  int master_port = 29500;                // torchrun's default
  int world_size = 1;
  int rank = 0;
  // Longest any collective (and the rendezvous) may wait for a peer. A peer that exits or is
  // killed is noticed at once (its sockets close); this bounds the wait for one that hangs.
  double timeout_s = 600;
  std::string socket_ifname;  // GLOO_SOCKET_IFNAME: the interface Gloo binds; empty = by address
  std::string source;         // what set world size and rank, for messages ("--dist-*", "WORLD_SIZE/RANK", ...)

  bool distributed() const { return world_size > 1; }
  nlohmann::json to_json() const;
};

// getenv-like; tests pass a map instead of the process environment.
using EnvLookup = std::function<std::optional<std::string>(const std::string& name)>;
EnvLookup process_environment();

// Flags first, then MASTER_ADDR/MASTER_PORT/WORLD_SIZE/RANK, then PET_*. Throws invalid_argument
// naming the flag or variable at fault (a rank outside the world, a port that is not one, ...).
Config resolve(const Flags& flags, const EnvLookup& env);

}  // namespace bulwark::dist
