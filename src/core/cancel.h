// core/cancel.h — cooperative cancellation of long steps. The owner of a step (the closed loop's
// controller) holds a flag and sets it from another thread; the step reads it at its natural
// boundaries (a training batch, an attack iteration, a calibration chunk, a child process's poll)
// and stops there: training returns early (train/options.h), everything else throws Cancelled.
// Header-only: a flag and one check.
#pragma once

#include <atomic>
#include <memory>
#include <string>

#include "core/error.h"

namespace bulwark {

// Null: the step cannot be cancelled. Shared so a step that outlives its owner's frame still reads
// valid memory.
using CancelFlag = std::shared_ptr<const std::atomic<bool>>;

class Cancelled : public Error {
 public:
  explicit Cancelled(const std::string& step) : Error(ErrorKind::kUnavailable, step + ": cancelled") {}
};

inline bool cancelled(const CancelFlag& flag) { return flag && flag->load(std::memory_order_relaxed); }

// Throws Cancelled naming `step` when the flag is set.
inline void throw_if_cancelled(const CancelFlag& flag, const char* step) {
  if (cancelled(flag)) throw Cancelled(step);
}

}  // namespace bulwark
