#include "core/subprocess.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <thread>

#include "core/error.h"

extern char** environ;

namespace bulwark {
namespace {

using Clock = std::chrono::steady_clock;

int status_code(int status) { return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status); }

void close_fd(int& fd) {
  if (fd >= 0) ::close(fd);
  fd = -1;
}

// The spawn attributes and file actions, freed on every path.
struct Spawn {
  posix_spawnattr_t attr;
  posix_spawn_file_actions_t actions;
  Spawn() {
    posix_spawnattr_init(&attr);
    posix_spawn_file_actions_init(&actions);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    posix_spawnattr_setpgroup(&attr, 0);  // a group of its own: kill(-pid) reaches its children
    sigset_t none, all;
    sigemptyset(&none);
    sigfillset(&all);
    posix_spawnattr_setsigmask(&attr, &none);   // not the parent's blocked signals
    posix_spawnattr_setsigdefault(&attr, &all);  // nor its ignored ones (SIGPIPE)
  }
  ~Spawn() {
    posix_spawn_file_actions_destroy(&actions);
    posix_spawnattr_destroy(&attr);
  }
  // Starts argv; 0 or the errno of the failure.
  int start(const std::vector<std::string>& argv, pid_t* pid) {
    if (argv.empty()) return EINVAL;
    std::vector<char*> cargv;
    for (const auto& a : argv) cargv.push_back(const_cast<char*>(a.c_str()));
    cargv.push_back(nullptr);
    return posix_spawn(pid, cargv[0], &actions, &attr, cargv.data(), environ);
  }
};

// Reads what `fd` has now, keeping up to `cap` bytes in `into` and counting the rest; false at EOF.
bool drain(int fd, std::string& into, size_t cap, size_t& dropped) {
  char buf[8192];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n > 0) {
      const size_t room = cap - std::min(into.size(), cap);
      const size_t keep = std::min(static_cast<size_t>(n), room);
      into.append(buf, keep);
      dropped += static_cast<size_t>(n) - keep;
      continue;
    }
    if (n == 0) return false;
    return errno == EAGAIN || errno == EINTR;
  }
}

}  // namespace

Subprocess::Subprocess(const SpawnOptions& options) {
  Spawn s;
  if (!options.stdout_file.empty()) {
    posix_spawn_file_actions_addopen(&s.actions, 1, options.stdout_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  }
  if (!options.stderr_file.empty()) {
    posix_spawn_file_actions_addopen(&s.actions, 2, options.stderr_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  }
  const int rc = s.start(options.argv, &pid_);
  if (rc != 0) {
    pid_ = -1;
    std::string files;
    if (!options.stdout_file.empty()) files += " stdout to " + options.stdout_file;
    if (!options.stderr_file.empty()) files += (files.empty() ? " " : ", ") + std::string("stderr to ") + options.stderr_file;
    throw io_error("cannot start " + (options.argv.empty() ? std::string("(no argv)") : options.argv[0]) +
                   (files.empty() ? "" : " (with" + files + ")") + ": " + std::strerror(rc));
  }
}

Subprocess::~Subprocess() {
  if (pid_ > 0 && !status_) {
    ::kill(-pid_, SIGKILL);
    wait();
  }
}

std::optional<int> Subprocess::poll() {
  if (status_ || pid_ <= 0) return status_;
  int st = 0;
  const pid_t r = ::waitpid(pid_, &st, WNOHANG);
  if (r == pid_) status_ = status_code(st);
  return status_;
}

int Subprocess::wait() {
  if (status_) return *status_;
  int st = 0;
  while (::waitpid(pid_, &st, 0) < 0 && errno == EINTR) {
  }
  status_ = status_code(st);
  return *status_;
}

int Subprocess::terminate(double grace_s, bool* killed) {
  if (killed) *killed = false;
  if (poll()) return *status_;
  ::kill(-pid_, SIGTERM);
  const auto until = Clock::now() + std::chrono::duration<double>(grace_s);
  while (Clock::now() < until) {
    if (poll()) return *status_;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ::kill(-pid_, SIGKILL);
  if (killed) *killed = true;
  return wait();
}

ProcessResult run_process(const std::vector<std::string>& argv, const std::string& stdin_text, double timeout_s,
                          size_t max_output, const CancelFlag& cancel) {
  ProcessResult r;
  int in[2] = {-1, -1}, out[2] = {-1, -1}, err[2] = {-1, -1};
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, in) != 0 || ::pipe2(out, O_CLOEXEC) != 0 ||
      ::pipe2(err, O_CLOEXEC) != 0) {
    for (int* p : {in, out, err}) close_fd(p[0]), close_fd(p[1]);
    throw io_error("cannot create pipes for " + (argv.empty() ? std::string("a child") : argv[0]));
  }
  pid_t pid = -1;
  int rc = 0;
  {
    Spawn s;
    posix_spawn_file_actions_adddup2(&s.actions, in[1], 0);
    posix_spawn_file_actions_adddup2(&s.actions, out[1], 1);
    posix_spawn_file_actions_adddup2(&s.actions, err[1], 2);
    rc = s.start(argv, &pid);
  }
  close_fd(in[1]);
  close_fd(out[1]);
  close_fd(err[1]);
  if (rc != 0) {
    for (int* p : {in, out, err}) close_fd(p[0]);
    r.exit_code = 127;
    r.err = "cannot execute " + (argv.empty() ? std::string("(no argv)") : argv[0]) + ": " + std::strerror(rc) + "\n";
    return r;
  }
  for (const int fd : {in[0], out[0], err[0]}) ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
  if (stdin_text.empty()) ::shutdown(in[0], SHUT_WR);
  size_t written = stdin_text.empty() ? std::string::npos : 0;

  const auto until = Clock::now() + std::chrono::duration<double>(timeout_s);
  int status = 0;
  bool exited = false;
  while (!exited) {
    const auto left_ms = std::chrono::duration_cast<std::chrono::milliseconds>(until - Clock::now()).count();
    if (left_ms <= 0 || cancelled(cancel)) {
      ::kill(-pid, SIGKILL);
      while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
      }
      r.timed_out = left_ms <= 0;
      break;
    }
    pollfd fds[3];
    nfds_t n = 0;
    if (out[0] >= 0) fds[n++] = {out[0], POLLIN, 0};
    if (err[0] >= 0) fds[n++] = {err[0], POLLIN, 0};
    if (written != std::string::npos) fds[n++] = {in[0], POLLOUT, 0};
    // With both outputs closed, only the exit is left to wait for: check it every 10 ms.
    ::poll(fds, n, n == 0 ? 10 : static_cast<int>(std::min<int64_t>(left_ms, 100)));
    if (out[0] >= 0 && !drain(out[0], r.out, max_output, r.out_dropped)) close_fd(out[0]);
    if (err[0] >= 0 && !drain(err[0], r.err, max_output, r.err_dropped)) close_fd(err[0]);
    if (written != std::string::npos) {
      const ssize_t w = ::send(in[0], stdin_text.data() + written, stdin_text.size() - written, MSG_NOSIGNAL);
      if (w > 0) written += static_cast<size_t>(w);
      if ((w < 0 && errno != EAGAIN && errno != EINTR) || written == stdin_text.size()) {
        ::shutdown(in[0], SHUT_WR);
        written = std::string::npos;
      }
    }
    if (out[0] < 0 && err[0] < 0) exited = ::waitpid(pid, &status, WNOHANG) == pid;
  }
  for (int* p : {in, out, err}) close_fd(p[0]);
  if (!r.timed_out && cancelled(cancel)) throw Cancelled(argv[0]);
  if (!r.timed_out) r.exit_code = status_code(status);
  return r;
}

}  // namespace bulwark
