#include "traffic/square_attacker.h"

#include <torch/torch.h>

#include <algorithm>

#include "attack/square.h"
#include "core/error.h"

namespace bulwark::traffic {
namespace {

// Thrown out of the LogitsFn to end an attack early; never escapes the attacker.
struct Stopped {};

}  // namespace

SquareAttacker::SquareAttacker(ClientOptions client, torch::Tensor x, torch::Tensor y, std::vector<int64_t> order,
                               SquareAttackerOptions options)
    : options_(options),
      client_(std::move(client)),
      x_(x.contiguous()),
      y_(y.contiguous()),
      order_(std::move(order)),
      pool_slot_(static_cast<size_t>(x_.size(0)), -1) {
  // Validates eps, range and budget now (errors name the flags), not on the crafting thread.
  attack::SquareOptions(options_.eps_linf).range(options_.lo, options_.hi).queries(options_.queries_per_image);
  if (options_.chunk < 1) throw invalid_argument("square chunk must be at least 1");
  if (order_.empty()) throw invalid_argument("--n: no images to attack");
}

SquareAttacker::~SquareAttacker() { stop(); }

torch::Tensor SquareAttacker::query(const torch::Tensor& batch) {
  if (stop_ || std::chrono::steady_clock::now() >= end_) throw Stopped{};
  const auto b = batch.detach().to(torch::kFloat32).contiguous();
  const auto r = client_.infer(b.data_ptr<float>(), b.sizes().vec());
  std::lock_guard<std::mutex> lock(mu_);
  if (!r.ok || r.rows != b.size(0)) {
    if (stop_) throw Stopped{};  // cut short by stop(): not the endpoint's failure
    ++counts_.failed_queries;
    throw unavailable("square query: " + (r.ok ? std::string("wrong row count in the answer") : r.error));
  }
  counts_.queries += r.rows;
  return torch::from_blob(const_cast<float*>(r.logits.data()), {r.rows, r.classes}, torch::kFloat32).clone();
}

void SquareAttacker::craft_chunk() {
  const int64_t n = static_cast<int64_t>(order_.size());
  const int64_t len = std::min<int64_t>(options_.chunk, n);
  std::vector<int64_t> images;
  for (int64_t i = 0; i < len; ++i) images.push_back(order_[static_cast<size_t>((next_position_ + i) % n)]);
  const auto idx = torch::tensor(images, torch::kInt64);
  const auto x = x_.index_select(0, idx), y = y_.index_select(0, idx);
  attack::Square square(attack::SquareOptions(options_.eps_linf)
                            .range(options_.lo, options_.hi)
                            .seed(options_.seed + static_cast<uint64_t>(chunk_index_))
                            .queries(options_.queries_per_image)
                            .batch_size(std::max<int64_t>(len, 1)));
  const auto adv = square.perturb([this](const torch::Tensor& b) { return query(b); }, x, y).contiguous();
  next_position_ = (next_position_ + len) % n;
  ++chunk_index_;
  std::lock_guard<std::mutex> lock(mu_);
  for (int64_t i = 0; i < len; ++i) {
    const auto image = images[static_cast<size_t>(i)];
    auto& slot = pool_slot_[static_cast<size_t>(image)];
    if (slot < 0) {
      slot = static_cast<int64_t>(pool_inputs_.size());
      pool_images_.push_back(image);
      pool_inputs_.push_back(adv[i].clone());
    } else {
      pool_inputs_[static_cast<size_t>(slot)] = adv[i].clone();  // readers keep their own handle to the old one
    }
    ++counts_.crafted;
  }
}

void SquareAttacker::warm_up() { craft_chunk(); }

void SquareAttacker::loop(std::chrono::steady_clock::time_point begin) {
  {
    std::unique_lock<std::mutex> lock(wait_mu_);
    wake_.wait_until(lock, begin, [this] { return stop_.load(); });
  }
  while (!stop_ && std::chrono::steady_clock::now() < end_) {
    try {
      craft_chunk();
    } catch (const Stopped&) {
      return;
    } catch (const std::exception&) {
      // The endpoint refused or failed (counted in failed_queries): back off briefly and go on,
      // as a persistent attacker would; the chunk's images are tried again.
      std::unique_lock<std::mutex> lock(wait_mu_);
      wake_.wait_for(lock, std::chrono::milliseconds(200), [this] { return stop_.load(); });
    }
  }
}

void SquareAttacker::run_between(std::chrono::steady_clock::time_point begin,
                                 std::chrono::steady_clock::time_point end) {
  stop();
  stop_ = false;
  end_ = end;
  thread_ = std::thread([this, begin] { loop(begin); });
}

void SquareAttacker::stop() {
  {
    std::lock_guard<std::mutex> lock(wait_mu_);
    stop_ = true;
  }
  wake_.notify_all();
  client_.stop();
  if (thread_.joinable()) thread_.join();
}

bool SquareAttacker::next(int64_t* image, torch::Tensor* input) {
  std::lock_guard<std::mutex> lock(mu_);
  if (pool_inputs_.empty()) return false;
  const size_t k = cursor_++ % pool_inputs_.size();
  *image = pool_images_[k];
  *input = pool_inputs_[k];
  return true;
}

SquareAttacker::Counts SquareAttacker::counts() const {
  std::lock_guard<std::mutex> lock(mu_);
  return counts_;
}

}  // namespace bulwark::traffic
