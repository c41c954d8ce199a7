#include "core/progress.h"

#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <iostream>

namespace bulwark {

std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  char buf[32];
  if (seconds < 60) {
    std::snprintf(buf, sizeof buf, "%.1fs", seconds);
  } else if (seconds < 3600) {
    std::snprintf(buf, sizeof buf, "%dm%02ds", static_cast<int>(seconds) / 60, static_cast<int>(seconds) % 60);
  } else {
    std::snprintf(buf, sizeof buf, "%dh%02dm", static_cast<int>(seconds) / 3600,
                  (static_cast<int>(seconds) % 3600) / 60);
  }
  return buf;
}

ProgressBar::ProgressBar(std::string label, int64_t total, bool enabled)
    : label_(std::move(label)),
      total_(total > 0 ? total : 1),
      enabled_(enabled),
      tty_(::isatty(STDERR_FILENO) != 0),
      start_(std::chrono::steady_clock::now()),
      last_draw_(start_) {}

ProgressBar::~ProgressBar() {
  if (!finished_ && enabled_ && tty_) std::cerr << '\n';
}

double ProgressBar::elapsed_s() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
}

void ProgressBar::update(int64_t done, const std::string& status) {
  done_ = done;
  status_ = status;
  if (!enabled_ || !tty_) return;  // a log file gets the final line only
  const auto now = std::chrono::steady_clock::now();
  if (now - last_draw_ < std::chrono::milliseconds(100)) return;
  last_draw_ = now;
  draw(false);
}

void ProgressBar::finish(const std::string& status) {
  if (finished_) return;
  finished_ = true;
  done_ = total_;
  if (!status.empty()) status_ = status;
  if (enabled_) draw(true);
}

void ProgressBar::draw(bool final_line) {
  constexpr int kWidth = 24;
  const double frac = std::min(1.0, static_cast<double>(done_) / static_cast<double>(total_));
  const int filled = static_cast<int>(frac * kWidth);
  const double elapsed = elapsed_s();
  const double eta = frac > 0 ? elapsed * (1 - frac) / frac : NAN;
  std::string bar(static_cast<size_t>(filled), '#');
  bar.append(static_cast<size_t>(kWidth - filled), '.');
  char head[64];
  std::snprintf(head, sizeof head, "%3d%%", static_cast<int>(frac * 100));
  std::cerr << (tty_ ? "\r\033[K" : "") << label_ << " [" << bar << "] " << head << ' ' << status_
            << (final_line ? "  " + format_duration(elapsed) : "  ETA " + format_duration(eta))
            << (final_line ? "\n" : "") << std::flush;
}

}  // namespace bulwark
