#include "serve/batcher.h"

#include <torch/torch.h>

#include <condition_variable>
#include <deque>
#include <iostream>
#include <mutex>

#include "core/error.h"
#include "serve/status.h"

namespace bulwark::serve {
namespace {

std::string sizes_text(const at::Tensor& t) {
  if (!t.defined()) return "nothing";
  std::string s = "[";
  for (int64_t i = 0; i < t.dim(); ++i) s += (i ? ", " : "") + std::to_string(t.size(i));
  return s + "]";
}

}  // namespace

struct DynamicBatcher::State {
  State(BatcherOptions o, RunFn r) : options(o), run(std::move(r)) {}
  struct Pending {
    at::Tensor x;
    std::promise<BatchResult> promise;
    Clock::time_point enqueued, deadline;
  };
  const BatcherOptions options;
  const RunFn run;
  std::mutex mu;
  std::condition_variable cv;  // work queued, stop asked, or the thread finished
  std::deque<Pending> queue;   // guarded by mu
  int64_t queued_rows = 0;     // rows in `queue`; guarded by mu
  int64_t admitted_rows = 0;   // rows queued or in a forward pass; guarded by mu
  bool stop = false;           // guarded by mu
  bool finished = false;       // the thread has left its loop; guarded by mu

  void run_batch(std::deque<Pending>& batch);
};

void BatcherOptions::validate() const {
  if (max_batch < 1 || max_batch > 65536) throw invalid_argument("--max-batch must be in 1..65536");
  if (max_queue_delay_us < 0 || max_queue_delay_us > 10'000'000) {
    throw invalid_argument("--max-queue-delay-us must be in 0..10000000");
  }
  if (max_queue < 1 || max_queue > 1'000'000) throw invalid_argument("--max-queue must be in 1..1000000 (rows)");
  if (max_queue < max_batch) {
    throw invalid_argument("--max-queue (" + std::to_string(max_queue) + " rows) must be >= --max-batch (" +
                           std::to_string(max_batch) + "): a full request must fit in the queue");
  }
  if (drain_timeout_ms < 0 || drain_timeout_ms > 3'600'000) {
    throw invalid_argument("--drain-timeout-ms must be in 0..3600000");
  }
}

DynamicBatcher::DynamicBatcher(BatcherOptions options, RunFn run)
    : options_(options), state_(std::make_shared<State>(options, std::move(run))) {
  options_.validate();
  thread_ = std::thread([s = state_] { loop(s); });
}

DynamicBatcher::~DynamicBatcher() {
  auto& s = *state_;
  std::unique_lock<std::mutex> lock(s.mu);
  s.stop = true;
  s.cv.notify_all();
  if (s.cv.wait_for(lock, std::chrono::milliseconds(options_.drain_timeout_ms), [&] { return s.finished; })) {
    lock.unlock();
    thread_.join();
    return;
  }
  // A forward pass is stuck: what is still queued fails now; the thread ends when (if) the
  // model returns, and owns everything it touches until then.
  auto queued = std::move(s.queue);
  s.queue.clear();
  s.admitted_rows -= s.queued_rows;
  s.queued_rows = 0;
  lock.unlock();
  for (auto& p : queued) {
    p.promise.set_exception(std::make_exception_ptr(
        unavailable("the model was unloaded while its forward pass hung (--drain-timeout-ms)")));
  }
  std::cerr << "bulwark serve: warning: a forward pass still runs after --drain-timeout-ms "
            << options_.drain_timeout_ms << "; leaving its thread behind\n";
  thread_.detach();
}

int64_t DynamicBatcher::admitted_rows() const {
  std::lock_guard<std::mutex> lock(state_->mu);
  return state_->admitted_rows;
}

std::future<BatchResult> DynamicBatcher::submit(at::Tensor x, Clock::time_point deadline) {
  const int64_t n = x.size(0);
  if (n < 1 || n > options_.max_batch) {
    throw invalid_argument(std::to_string(n) + " rows: a request carries 1.." + std::to_string(options_.max_batch) +
                           " rows (--max-batch)");
  }
  State::Pending p{std::move(x), {}, Clock::now(), deadline};
  auto future = p.promise.get_future();
  auto& s = *state_;
  {
    std::lock_guard<std::mutex> lock(s.mu);
    if (s.stop) throw unavailable("the model is being unloaded");
    if (s.admitted_rows + n > options_.max_queue) {
      throw unavailable("queue full: " + std::to_string(s.admitted_rows) + " rows waiting or running, " +
                        std::to_string(n) + " more would pass --max-queue " + std::to_string(options_.max_queue));
    }
    s.queued_rows += n;
    s.admitted_rows += n;
    s.queue.push_back(std::move(p));
  }
  s.cv.notify_all();
  return future;
}

void DynamicBatcher::loop(const std::shared_ptr<State>& sp) {
  auto& s = *sp;
  const auto delay = std::chrono::microseconds(s.options.max_queue_delay_us);
  for (;;) {
    std::deque<State::Pending> batch, expired;
    {
      std::unique_lock<std::mutex> lock(s.mu);
      s.cv.wait(lock, [&] { return s.stop || !s.queue.empty(); });
      if (s.queue.empty()) {  // stopping and drained
        s.finished = true;
        s.cv.notify_all();
        return;
      }
      // Wait for company until the oldest request's delay is up or a full batch is queued.
      const auto until = s.queue.front().enqueued + delay;
      s.cv.wait_until(lock, until, [&] { return s.stop || s.queued_rows >= s.options.max_batch; });
      const auto now = Clock::now();
      int64_t rows = 0;
      while (!s.queue.empty()) {
        auto& p = s.queue.front();
        const int64_t n = p.x.size(0);
        const bool late = p.deadline <= now;  // its caller stopped waiting: compute nothing for nobody
        if (!late && !batch.empty() && rows + n > s.options.max_batch) break;
        s.queued_rows -= n;
        if (late) {
          s.admitted_rows -= n;
          expired.push_back(std::move(p));
        } else {
          rows += n;
          batch.push_back(std::move(p));
        }
        s.queue.pop_front();
      }
    }
    for (auto& p : expired) {
      p.promise.set_exception(std::make_exception_ptr(
          DeadlineExceededError("the request's deadline passed while it was queued (--request-timeout-ms)")));
    }
    if (!batch.empty()) s.run_batch(batch);
  }
}

void DynamicBatcher::State::run_batch(std::deque<Pending>& batch) {
  const auto start = Clock::now();
  int64_t rows = 0;
  for (const auto& p : batch) rows += p.x.size(0);
  // Every result is built before any promise is set: a failure part-way fails the whole batch,
  // and no promise is ever set twice.
  std::vector<BatchResult> results;
  std::exception_ptr error;
  try {
    std::vector<at::Tensor> xs;
    xs.reserve(batch.size());
    for (const auto& p : batch) xs.push_back(p.x);
    const auto x = xs.size() == 1 ? xs[0] : torch::cat(xs, 0);
    auto [logits, scores] = run(x);
    if (!logits.defined() || logits.dim() < 1 || logits.size(0) != rows) {
      throw internal_error("the model answered " + sizes_text(logits) + " for a batch of " + std::to_string(rows) +
                           " rows");
    }
    if (scores.defined() && (scores.dim() != 1 || scores.size(0) != rows)) {
      throw internal_error("the detectors scored " + sizes_text(scores) + " for a batch of " + std::to_string(rows) +
                           " rows");
    }
    const double compute_s = std::chrono::duration<double>(Clock::now() - start).count();
    int64_t offset = 0;
    for (const auto& p : batch) {
      const int64_t n = p.x.size(0);
      BatchResult r;
      r.logits = logits.narrow(0, offset, n);
      if (scores.defined()) r.scores = scores.narrow(0, offset, n);
      r.queue_s = std::chrono::duration<double>(start - p.enqueued).count();
      r.compute_s = compute_s;
      r.batch_rows = rows;
      offset += n;
      results.push_back(std::move(r));
    }
  } catch (...) {
    error = std::current_exception();
  }
  for (size_t i = 0; i < batch.size(); ++i) {
    try {
      if (error)
        batch[i].promise.set_exception(error);
      else
        batch[i].promise.set_value(std::move(results[i]));
    } catch (const std::future_error&) {
      // Already satisfied: cannot happen as written; never let it end the batch thread.
    }
  }
  std::lock_guard<std::mutex> lock(mu);
  admitted_rows -= rows;
}

}  // namespace bulwark::serve
