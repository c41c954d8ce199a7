// traffic/square_attacker.h — the query-based black-box attacker of a `square` phase: Square
// Attack (attack::Square) driven by a LogitsFn that asks the live endpoint for logits, crafting
// adversarials for the test images in the run's order while the phase lasts. Finished
// adversarials go into a pool (the latest per image) that the phase's attacked requests replay,
// so what they measure is the served model against inputs crafted against the served model.
//
// Its queries are traffic the server sees (and may flag, throttle or block) but are not counted
// in the per-second lines; the phase summary reports them.
//
// Thread-safety: construct, warm_up, run_between and stop from one owner thread; next() and
// counts() from any thread.
#pragma once

#include <torch/types.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "traffic/client.h"

namespace bulwark::traffic {

struct SquareAttackerOptions {
  double eps_linf = 0.1;
  int64_t queries_per_image = 100;
  int64_t chunk = 8;  // images attacked together (one query request carries the standing ones)
  double lo = 0.0, hi = 1.0;
  uint64_t seed = 0;  // chunk k uses seed + k
};

class SquareAttacker {
 public:
  // x: [n, C, H, W] float; y: [n] int64; order: the image order to attack in.
  SquareAttacker(ClientOptions client, torch::Tensor x, torch::Tensor y, std::vector<int64_t> order,
                 SquareAttackerOptions options);
  ~SquareAttacker();
  SquareAttacker(const SquareAttacker&) = delete;
  SquareAttacker& operator=(const SquareAttacker&) = delete;

  // Crafts one chunk on the calling thread so the pool is not empty when the phase starts.
  // Throws unavailable with the endpoint's answer when a query fails.
  void warm_up();
  // Crafts on its own thread from `begin` until `end` (steady clock), or until stop().
  void run_between(std::chrono::steady_clock::time_point begin, std::chrono::steady_clock::time_point end);
  void stop();  // stops crafting, cuts a query in flight short, joins

  // The next adversarial, round robin over the pool: image index and input [C, H, W]. False
  // when the pool is empty.
  bool next(int64_t* image, torch::Tensor* input);

  struct Counts {
    int64_t queries = 0;         // image rows sent to the endpoint
    int64_t failed_queries = 0;  // requests that failed (transport, non-200)
    int64_t crafted = 0;         // adversarials finished
  };
  Counts counts() const;
  const SquareAttackerOptions& options() const { return options_; }

 private:
  void craft_chunk();  // one chunk of images; throws on a failed query
  torch::Tensor query(const torch::Tensor& batch);
  void loop(std::chrono::steady_clock::time_point begin);

  const SquareAttackerOptions options_;
  V2Client client_;
  const torch::Tensor x_, y_;
  const std::vector<int64_t> order_;
  int64_t next_position_ = 0;  // into order_; owner or crafting thread only
  int64_t chunk_index_ = 0;

  mutable std::mutex mu_;  // guards pool_, cursor_ and the counts
  std::vector<int64_t> pool_images_;
  std::vector<torch::Tensor> pool_inputs_;
  std::vector<int64_t> pool_slot_;  // image -> pool index, -1 when not crafted yet
  size_t cursor_ = 0;
  Counts counts_;

  std::atomic<bool> stop_{false};
  // Queries after this time end the attack (so it does not spill into the next phase); set
  // before the crafting thread starts.
  std::chrono::steady_clock::time_point end_ = std::chrono::steady_clock::time_point::max();
  std::mutex wait_mu_;
  std::condition_variable wake_;
  std::thread thread_;
};

}  // namespace bulwark::traffic
