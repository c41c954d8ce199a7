// core/subprocess.h — child processes, the one place Bulwark starts one. posix_spawn (argv, file
// actions and the process group built before the call: nothing is allocated between fork and exec
// in a threaded process), its own process group so a kill reaches the whole tree, stdout/stderr to
// files or captured with a bound, a timeout, and a kill on cancel. Used by the guard's subprocess
// runner (a `bulwark harden` child) and its Kubernetes runner (kubectl).
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

#include "core/cancel.h"

namespace bulwark {

struct SpawnOptions {
  std::vector<std::string> argv;  // argv[0]: the executable's path (no PATH search)
  std::string stdout_file;        // when set: stdout written there (created or truncated, 0644)
  std::string stderr_file;        // the same for stderr; unset streams are inherited
};

// A running child in a process group of its own. The destructor kills the group (SIGKILL) and
// reaps the child if it is still running.
class Subprocess {
 public:
  // Throws io_error naming argv[0] when it cannot be started (missing, not executable).
  explicit Subprocess(const SpawnOptions& options);
  ~Subprocess();
  Subprocess(const Subprocess&) = delete;
  Subprocess& operator=(const Subprocess&) = delete;

  pid_t pid() const { return pid_; }
  // The exit status once the child has exited, else nullopt (never blocks): the exit code, or 128 +
  // the signal that ended it.
  std::optional<int> poll();
  // Blocks until it exits.
  int wait();
  // SIGTERM to the group, then SIGKILL to it if the child has not exited within `grace_s`; returns
  // the exit status, and in `killed` whether it took the SIGKILL. A call after the exit returns it.
  int terminate(double grace_s, bool* killed = nullptr);

 private:
  pid_t pid_ = -1;
  std::optional<int> status_;
};

struct ProcessResult {
  int exit_code = -1;    // -1 when it was killed at the timeout
  bool timed_out = false;
  std::string out, err;  // each at most `max_output` bytes; the rest is read and dropped
  size_t out_dropped = 0, err_dropped = 0;
};

// Runs argv (argv[0] a path) to completion: `stdin_text` written to its stdin (through a socket,
// so a child that exits early costs an EPIPE, not a SIGPIPE), stdout and stderr captured, the whole
// group killed at `timeout_s`. A child that cannot be started is exit code 127 with the reason in err.
// Once `cancel` is set (read every 100 ms at most), the group is killed, the child reaped and
// Cancelled thrown.
ProcessResult run_process(const std::vector<std::string>& argv, const std::string& stdin_text, double timeout_s,
                          size_t max_output = size_t{1} << 20, const CancelFlag& cancel = nullptr);

}  // namespace bulwark
