// bench/soak/server.cpp — the `bulwark serve` child process (server.h): fork/exec with stdout on
// a pipe and stderr in a file, signals, waiting for its exit, and /proc/PID/status.
#include "server.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <stdexcept>
#include <thread>

#include "soak.h"

namespace bulwark::soak {

ServerProcess::ServerProcess(const std::string& binary, const std::vector<std::string>& args,
                             const std::string& stderr_path, const std::vector<std::string>& env) {
  int out[2];
  if (::pipe(out) != 0) throw std::runtime_error("pipe");
  pid_ = ::fork();
  if (pid_ == 0) {
    ::dup2(out[1], 1);
    ::close(out[0]);
    const int err = ::open(stderr_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (err >= 0) ::dup2(err, 2);
    std::vector<char*> argv{const_cast<char*>(binary.c_str())};
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    for (const auto& e : env) ::putenv(const_cast<char*>(e.c_str()));
    ::execv(binary.c_str(), argv.data());
    ::_exit(127);
  }
  ::close(out[1]);
  out_ = ::fdopen(out[0], "r");
}

ServerProcess::~ServerProcess() {
  if (!exited_) {
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
  }
  std::fclose(out_);
}

std::string ServerProcess::first_line() {
  char buf[1024];
  return std::fgets(buf, sizeof buf, out_) ? std::string(buf) : "";
}

void ServerProcess::signal(int sig) const { ::kill(pid_, sig); }

std::optional<int> ServerProcess::wait_exit(double timeout_s) {
  const auto t0 = Clock::now();
  for (;;) {
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      exited_ = true;
      return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    }
    if (since_s(t0) > timeout_s) return std::nullopt;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

long ServerProcess::status_kib(const std::string& field) const {
  std::ifstream in("/proc/" + std::to_string(pid_) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(field + ":", 0) == 0) return std::atol(line.c_str() + field.size() + 1);
  }
  return 0;
}

}  // namespace bulwark::soak
