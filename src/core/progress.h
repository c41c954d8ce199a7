// core/progress.h — a one-line progress bar on stderr for anything longer than a few seconds.
// Not thread-safe: one owner thread calls update()/finish().
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace bulwark {

class ProgressBar {
 public:
  // `total` units of work (images, batches); `enabled` false makes every call a no-op.
  ProgressBar(std::string label, int64_t total, bool enabled = true);
  ~ProgressBar();

  // Sets the units done so far and a short status (e.g. "loss 0.31 acc 88.2%").
  void update(int64_t done, const std::string& status = "");
  // Draws the final state and moves to a new line.
  void finish(const std::string& status = "");

  double elapsed_s() const;

 private:
  void draw(bool final_line);

  std::string label_;
  int64_t total_;
  int64_t done_ = 0;
  std::string status_;
  bool enabled_;
  bool tty_;
  bool finished_ = false;
  std::chrono::steady_clock::time_point start_;
  std::chrono::steady_clock::time_point last_draw_;
};

// "1m05s", "12.3s" — for ETAs and summaries.
std::string format_duration(double seconds);

}  // namespace bulwark
