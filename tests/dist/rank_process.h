// One rank of a data-parallel job as a child `bulwark` process: its own environment (the
// launcher's variables), stdout and stderr into a file, a deadline-bounded wait, killed at the end
// if still running.
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace bulwark::testing {

// A loopback port nothing listens on right now.
inline int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
}

class RankProcess {
 public:
  // `env` is set on top of this process's environment, from which every launcher variable is
  // removed first, so a test's job is exactly what it says.
  RankProcess(const std::vector<std::string>& args, const std::vector<std::pair<std::string, std::string>>& env,
              std::string log_path)
      : log_path_(std::move(log_path)) {
    pid_ = ::fork();
    if (pid_ == 0) {
      const int fd = ::open(log_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
      if (fd >= 0) {
        ::dup2(fd, 1);
        ::dup2(fd, 2);
      }
      for (const char* v :
           {"MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK", "LOCAL_RANK", "PET_MASTER_ADDR", "PET_MASTER_PORT",
            "PET_NNODES", "PET_NODE_RANK", "PET_NPROC_PER_NODE", "GLOO_SOCKET_IFNAME"}) {
        ::unsetenv(v);
      }
      for (const auto& [k, v] : env) ::setenv(k.c_str(), v.c_str(), 1);
      std::vector<char*> argv{const_cast<char*>(BULWARK_BIN)};
      for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
      argv.push_back(nullptr);
      ::execv(BULWARK_BIN, argv.data());
      ::_exit(127);
    }
  }
  ~RankProcess() {
    if (pid_ > 0 && !exit_code_) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  RankProcess(const RankProcess&) = delete;
  RankProcess& operator=(const RankProcess&) = delete;

  void signal(int sig) { ::kill(pid_, sig); }

  // The exit code (-1 if killed by a signal), or nullopt if still running after `timeout_s`.
  std::optional<int> wait_exit(double timeout_s) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
    while (!exit_code_) {
      int status = 0;
      const pid_t r = ::waitpid(pid_, &status, WNOHANG);
      if (r == pid_) {
        exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
        break;
      }
      if (std::chrono::steady_clock::now() > deadline) return std::nullopt;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return exit_code_;
  }

  std::string output() const {
    std::ifstream in(log_path_);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }

 private:
  pid_t pid_ = -1;
  std::string log_path_;
  std::optional<int> exit_code_;
};

// The variables torchrun and a PyTorchJob set for one rank.
inline std::vector<std::pair<std::string, std::string>> torchrun_env(int port, int world, int rank) {
  return {{"MASTER_ADDR", "127.0.0.1"},
          {"MASTER_PORT", std::to_string(port)},
          {"WORLD_SIZE", std::to_string(world)},
          {"RANK", std::to_string(rank)}};
}

}  // namespace bulwark::testing
