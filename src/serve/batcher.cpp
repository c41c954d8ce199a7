#include "serve/batcher.h"

#include <torch/torch.h>

#include "core/error.h"

namespace bulwark::serve {

void BatcherOptions::validate() const {
  if (max_batch < 1 || max_batch > 65536) throw invalid_argument("--max-batch must be in 1..65536");
  if (max_queue_delay_us < 0 || max_queue_delay_us > 10'000'000) {
    throw invalid_argument("--max-queue-delay-us must be in 0..10000000");
  }
  if (max_queue < 1 || max_queue > 1'000'000) throw invalid_argument("--max-queue must be in 1..1000000");
}

DynamicBatcher::DynamicBatcher(BatcherOptions options, RunFn run) : options_(options), run_(std::move(run)) {
  options_.validate();
  thread_ = std::thread([this] { loop(); });
}

DynamicBatcher::~DynamicBatcher() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

std::future<BatchResult> DynamicBatcher::submit(at::Tensor x) {
  Pending p{std::move(x), {}, Clock::now()};
  auto future = p.promise.get_future();
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stop_) throw unavailable("the model is being unloaded");
    if (static_cast<int64_t>(queue_.size()) >= options_.max_queue) {
      throw unavailable("queue full (" + std::to_string(options_.max_queue) + " requests waiting; --max-queue)");
    }
    queued_rows_ += p.x.size(0);
    queue_.push_back(std::move(p));
  }
  cv_.notify_one();
  return future;
}

void DynamicBatcher::loop() {
  const auto delay = std::chrono::microseconds(options_.max_queue_delay_us);
  for (;;) {
    std::deque<Pending> batch;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stopping and drained
      // Wait for company until the oldest request's deadline or a full batch.
      const auto deadline = queue_.front().enqueued + delay;
      cv_.wait_until(lock, deadline, [&] { return stop_ || queued_rows_ >= options_.max_batch; });
      int64_t rows = 0;
      while (!queue_.empty()) {
        const int64_t n = queue_.front().x.size(0);
        if (!batch.empty() && rows + n > options_.max_batch) break;
        rows += n;
        queued_rows_ -= n;
        batch.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
    }
    run_batch(batch);
  }
}

void DynamicBatcher::run_batch(std::deque<Pending>& batch) {
  const auto start = Clock::now();
  try {
    std::vector<at::Tensor> xs;
    xs.reserve(batch.size());
    for (const auto& p : batch) xs.push_back(p.x);
    const auto x = xs.size() == 1 ? xs[0] : torch::cat(xs, 0);
    auto [logits, scores] = run_(x);
    const double compute_s = std::chrono::duration<double>(Clock::now() - start).count();
    int64_t offset = 0;
    for (auto& p : batch) {
      const int64_t n = p.x.size(0);
      BatchResult r;
      r.logits = logits.narrow(0, offset, n);
      if (scores.defined()) r.scores = scores.narrow(0, offset, n);
      r.queue_s = std::chrono::duration<double>(start - p.enqueued).count();
      r.compute_s = compute_s;
      r.batch_rows = x.size(0);
      offset += n;
      p.promise.set_value(std::move(r));
    }
  } catch (...) {
    for (auto& p : batch) p.promise.set_exception(std::current_exception());
  }
}

}  // namespace bulwark::serve
