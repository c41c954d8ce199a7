// serve/batcher.h — dynamic batching: requests from many connections are concatenated into one
// forward pass of up to max_batch rows, waiting at most max_queue_delay_us after the oldest
// request arrived. Admission is bounded in rows: past max_queue rows waiting or in a forward
// pass a request is refused at once (kUnavailable -> 503), so memory and latency stay bounded.
// A request carries a deadline: still queued when it passes, it is dropped without running.
//
// Thread-safety: submit() may be called from any thread. One batch thread per batcher runs the
// model. The destructor stops accepting and lets the thread finish everything queued; if a
// forward pass is still running after drain_timeout_ms (a hung model), it fails what is queued
// and leaves the thread behind (it owns its state and ends when the forward pass returns).
#pragma once

#include <ATen/core/Tensor.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <future>
#include <memory>
#include <thread>

namespace bulwark::serve {

struct BatcherOptions {
  int64_t max_batch = 32;            // rows per forward pass, and the most rows one request may carry
  int64_t max_queue_delay_us = 500;  // how long the oldest request may wait for company
  int64_t max_queue = 64;            // rows admitted (queued or in a forward pass) before refusing
  int64_t drain_timeout_ms = 30000;  // how long unloading waits for a running forward pass

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
  using Clock = std::chrono::steady_clock;
  // run: inputs [B, ...] -> {logits [B, ...], scores [B] or undefined}. An exception it throws,
  // or an answer without B rows, fails every request of that batch (kInternal).
  using RunFn = std::function<std::pair<at::Tensor, at::Tensor>(const at::Tensor&)>;

  DynamicBatcher(BatcherOptions options, RunFn run);
  ~DynamicBatcher();
  DynamicBatcher(const DynamicBatcher&) = delete;
  DynamicBatcher& operator=(const DynamicBatcher&) = delete;

  // x: [n, ...] with 1 <= n <= max_batch. Throws kUnavailable when admitting n more rows would
  // pass max_queue. `deadline`: when the caller stops waiting; a request still queued then gets
  // DeadlineExceededError without running.
  std::future<BatchResult> submit(at::Tensor x, Clock::time_point deadline = Clock::time_point::max());
  const BatcherOptions& options() const { return options_; }
  // Rows admitted now: queued or in a forward pass (submit refuses past options().max_queue).
  int64_t admitted_rows() const;

 private:
  struct State;
  static void loop(const std::shared_ptr<State>& s);

  const BatcherOptions options_;
  std::shared_ptr<State> state_;  // shared with the batch thread, which may outlive this object
  std::thread thread_;
};

}  // namespace bulwark::serve
