// serve/batcher.h — dynamic batching: requests from many connections are concatenated into one
// forward pass of up to max_batch rows, waiting at most max_queue_delay_us after the oldest
// request arrived. A full queue refuses at once (kUnavailable -> 503), so memory stays bounded.
//
// Thread-safety: submit() may be called from any thread. One batch thread per batcher runs the
// model. The destructor stops accepting, finishes everything queued, and joins the thread.
#pragma once

#include <ATen/core/Tensor.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <future>
#include <mutex>
#include <thread>

namespace bulwark::serve {

struct BatcherOptions {
  int64_t max_batch = 32;            // rows per forward pass
  int64_t max_queue_delay_us = 500;  // how long the oldest request may wait for company
  int64_t max_queue = 1024;          // pending requests before refusing

  void validate() const;  // throws invalid_argument naming the flag
};

struct BatchResult {
  at::Tensor logits;  // [n, K] rows of this request
  at::Tensor scores;  // [n] guard scores, undefined when the guard is off
  double queue_s = 0;
  double compute_s = 0;
  int64_t batch_rows = 0;  // rows in the forward pass this request ran in
};

class DynamicBatcher {
 public:
  // run: inputs [B, ...] -> {logits [B, K], scores [B] or undefined}. Exceptions it throws reach
  // every request of that batch.
  using RunFn = std::function<std::pair<at::Tensor, at::Tensor>(const at::Tensor&)>;

  DynamicBatcher(BatcherOptions options, RunFn run);
  ~DynamicBatcher();
  DynamicBatcher(const DynamicBatcher&) = delete;
  DynamicBatcher& operator=(const DynamicBatcher&) = delete;

  // x: [n, ...] with n >= 1. Throws kUnavailable when the queue is full.
  std::future<BatchResult> submit(at::Tensor x);
  const BatcherOptions& options() const { return options_; }

 private:
  using Clock = std::chrono::steady_clock;
  struct Pending {
    at::Tensor x;
    std::promise<BatchResult> promise;
    Clock::time_point enqueued;
  };
  void loop();
  void run_batch(std::deque<Pending>& batch);

  const BatcherOptions options_;
  const RunFn run_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Pending> queue_;  // guarded by mu_
  int64_t queued_rows_ = 0;    // guarded by mu_
  bool stop_ = false;          // guarded by mu_
  std::thread thread_;
};

}  // namespace bulwark::serve
