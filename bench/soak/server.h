// bench/soak/server.h — the server under test, a `bulwark serve` child process (the pattern of
// tests/serve/server_process.h): its first stdout line, signals, its exit, and its RSS.
#pragma once

#include <sys/types.h>

#include <cstdio>
#include <optional>
#include <string>
#include <vector>

namespace bulwark::soak {

// Owned by the main thread; the swapper and the drain signal it, the RSS sampler reads /proc.
class ServerProcess {
 public:
  // Starts `binary args...` with `env` (NAME=VALUE) added and its stderr in `stderr_path`.
  ServerProcess(const std::string& binary, const std::vector<std::string>& args, const std::string& stderr_path,
                const std::vector<std::string>& env);
  ~ServerProcess();  // SIGKILL if it still runs
  std::string first_line();
  pid_t pid() const { return pid_; }
  void signal(int sig) const;
  // The exit code (-1: ended by a signal), or nullopt while it still runs after `timeout_s`.
  std::optional<int> wait_exit(double timeout_s);
  // A KiB field of /proc/PID/status: VmRSS, or its parts RssAnon (heap, stacks) and RssFile
  // (mapped library pages); 0 once gone.
  long status_kib(const std::string& field = "VmRSS") const;
  long rss_kib() const { return status_kib(); }

 private:
  pid_t pid_ = -1;
  FILE* out_ = nullptr;
  bool exited_ = false;
};

}  // namespace bulwark::soak
