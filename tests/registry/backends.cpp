// The throwaway PostgreSQL server behind the registry tests' PostgreSQL runs, and the per-backend
// locations. The server is this binary's child: started on first use, stopped by a GoogleTest
// environment at exit, and sent SIGQUIT (immediate shutdown) by the kernel if the binary dies
// first (PR_SET_PDEATHSIG), so a killed or timed-out test leaves no server behind.
#include "backends.h"

#include <fcntl.h>
#include <grp.h>
#include <netinet/in.h>
#include <pwd.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <thread>
#include <vector>

#include "registry/db.h"
#include "registry_test_util.h"

namespace bulwark::registry::test {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

constexpr std::chrono::seconds kInitdbDeadline{60};
constexpr std::chrono::seconds kStartDeadline{30};
constexpr std::chrono::seconds kStopDeadline{10};

// The newest /usr/lib/postgresql/<major>/bin holding initdb and postgres (or $BULWARK_PG_BIN).
std::string find_bin_dir() {
  if (const char* env = std::getenv("BULWARK_PG_BIN"); env != nullptr && *env != '\0') return env;
  std::string best;
  int best_major = -1;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator("/usr/lib/postgresql", ec)) {
    const std::string bin = e.path().string() + "/bin";
    if (!fs::exists(bin + "/initdb") || !fs::exists(bin + "/postgres")) continue;
    const int major = std::atoi(e.path().filename().c_str());
    if (major > best_major) {
      best_major = major;
      best = bin;
    }
  }
  return best;
}

std::string tail_of(const std::string& path) {
  const std::string text = read_all(path);
  return text.size() > 2000 ? text.substr(text.size() - 2000) : text;
}

// Who runs initdb and postgres: this user, or nobody when this is root (initdb refuses root).
struct ServerUser {
  bool drop = false;
  uid_t uid = 0;
  gid_t gid = 0;
};

ServerUser server_user() {
  ServerUser u;
  if (::geteuid() != 0) return u;
  const passwd* pw = ::getpwnam("nobody");
  if (pw == nullptr) return u;  // initdb will say why it refuses
  u.drop = true;
  u.uid = pw->pw_uid;
  u.gid = pw->pw_gid;
  return u;
}

// fork + exec `argv` with stdout and stderr appended to `log`, as `user`, killed by the kernel
// with `death_signal` if this process dies first.
pid_t spawn(const std::vector<std::string>& args, const std::string& log, const ServerUser& user, int death_signal) {
  std::vector<std::string> owned = args;
  std::vector<char*> argv;
  for (auto& a : owned) argv.push_back(a.data());
  argv.push_back(nullptr);
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid != 0) return pid;
  const int out = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  const int in = ::open("/dev/null", O_RDONLY);
  if (out < 0 || in < 0) ::_exit(126);
  ::dup2(in, 0);
  ::dup2(out, 1);
  ::dup2(out, 2);
  if (user.drop && (::setgroups(0, nullptr) != 0 || ::setgid(user.gid) != 0 || ::setuid(user.uid) != 0)) ::_exit(125);
  // After setuid, which clears it; and the parent may already be gone.
  ::prctl(PR_SET_PDEATHSIG, death_signal);
  if (::getppid() != parent) ::_exit(124);
  ::execv(argv[0], argv.data());
  ::_exit(127);
}

// The exit status, or -1 after killing it at the deadline.
int wait_for(pid_t pid, Clock::duration deadline) {
  const auto end = Clock::now() + deadline;
  int status = 0;
  while (Clock::now() < end) {
    if (::waitpid(pid, &status, WNOHANG) == pid)
      return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ::kill(pid, SIGKILL);
  ::waitpid(pid, &status, 0);
  return -1;
}

int free_loopback_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  int port = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    port = ntohs(addr.sin_port);
  }
  ::close(fd);
  return port;
}

class PostgresServer {
 public:
  // Empty when the server runs; otherwise why it does not.
  const std::string& ensure_started() {
    if (!attempted_) {
      attempted_ = true;
      const auto t0 = Clock::now();
      error_ = start();
      if (error_.empty()) {
        std::cout << "[ postgres ] server on 127.0.0.1:" << port_ << " (" << bin_ << "), started in "
                  << std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0).count() << " ms"
                  << std::endl;
      }
    }
    return error_;
  }

  void stop() {
    if (pid_ > 0) {
      ::kill(pid_, SIGQUIT);  // immediate shutdown: nothing here is worth a checkpoint
      if (wait_for(pid_, kStopDeadline) < 0) std::cerr << "[ postgres ] server ignored SIGQUIT; killed" << std::endl;
      pid_ = 0;
    }
    root_.reset();
  }

  std::string url(const std::string& database) const {
    return "postgresql://bulwark@127.0.0.1:" + std::to_string(port_) + "/" + database;
  }

  // Runs one SQL command against the `postgres` database; fails the test when it fails.
  bool admin(const std::string& sql) const {
    const auto r =
        bulwark::testing::run_command(psql_ + " -X -q -v ON_ERROR_STOP=1 '" + url("postgres") + "' -c '" + sql + "'");
    EXPECT_EQ(r.exit_code, 0) << sql << ": " << r.output;
    return r.exit_code == 0;
  }

  std::string new_database_name() { return "t" + std::to_string(++databases_); }
  const std::string& psql() const { return psql_; }

 private:
  std::string start() {
    bin_ = find_bin_dir();
    if (bin_.empty()) {
      return "PostgreSQL's server binaries are not under /usr/lib/postgresql/*/bin (install the Debian package "
             "postgresql: make deps), or set BULWARK_PG_BIN; BULWARK_TEST_POSTGRES=skip skips these tests";
    }
    psql_ = fs::exists(bin_ + "/psql") ? bin_ + "/psql" : "psql";
    const ServerUser user = server_user();
    root_ = std::make_unique<bulwark::testing::TempDir>();
    const std::string root = root_->path(), data = root + "/data";
    if (user.drop && ::chown(root.c_str(), user.uid, user.gid) != 0) return "cannot chown " + root + " to nobody";
    const std::string initdb_log = root + "/initdb.log";
    const pid_t initdb =
        spawn({bin_ + "/initdb", "-D", data, "-A", "trust", "-U", "bulwark", "--no-sync", "-E", "UTF8", "--locale=C"},
              initdb_log, user, SIGKILL);
    const int rc = wait_for(initdb, kInitdbDeadline);
    if (rc != 0) {
      return "initdb " + std::string(rc < 0 ? "did not finish in 60 s" : "failed (exit " + std::to_string(rc) + ")") +
             ":\n" + tail_of(initdb_log);
    }
    std::string why;
    for (int attempt = 0; attempt < 3; ++attempt) {  // another process may take the free port first
      port_ = free_loopback_port();
      why = launch(data, root, user);
      if (why.empty()) return "";
    }
    return why;
  }

  std::string launch(const std::string& data, const std::string& socket_dir, const ServerUser& user) {
    const std::string log = socket_dir + "/server.log";
    pid_ = spawn({bin_ + "/postgres", "-D", data, "-k", socket_dir, "-p", std::to_string(port_), "-c",
                  "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "synchronous_commit=off", "-c",
                  "full_page_writes=off", "-c", "max_connections=200"},
                 log, user, SIGQUIT);
    const std::string ready = (fs::exists(bin_ + "/pg_isready") ? bin_ + "/pg_isready" : "pg_isready") +
                              " -q -t 1 -h 127.0.0.1 -U bulwark -d postgres -p " + std::to_string(port_);
    const auto end = Clock::now() + kStartDeadline;
    while (Clock::now() < end) {
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = 0;
        return "postgres exited while starting:\n" + tail_of(log);
      }
      if (bulwark::testing::run_command(ready).exit_code == 0) return "";
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
    pid_ = 0;
    return "postgres did not accept connections within 30 s:\n" + tail_of(log);
  }

  bool attempted_ = false;
  std::string error_, bin_, psql_;
  std::unique_ptr<bulwark::testing::TempDir> root_;
  pid_t pid_ = 0;
  int port_ = 0;
  int databases_ = 0;
};

// The one server of this test binary (a test fixture's global, like GoogleTest's own registry).
PostgresServer& server() {
  static PostgresServer s;
  return s;
}

class StopServer : public ::testing::Environment {
 public:
  void TearDown() override { server().stop(); }
};
[[maybe_unused]] ::testing::Environment* const kStopServer = ::testing::AddGlobalTestEnvironment(new StopServer);

std::string database_of(const std::string& location) {
  const size_t q = location.find('?');
  const size_t slash = location.rfind('/', q);
  return location.substr(slash + 1, q - slash - 1);
}

}  // namespace

std::string backend_name(const ::testing::TestParamInfo<Backend>& info) { return to_string(info.param); }

void require_backend(Backend backend) {
  if (backend != Backend::kPostgres) return;
  const std::string& error = server().ensure_started();
  if (error.empty()) return;
  const char* mode = std::getenv("BULWARK_TEST_POSTGRES");
  if (mode != nullptr && std::string(mode) == "skip") GTEST_SKIP() << error;
  FAIL() << error;
}

Location new_location(Backend backend, const bulwark::testing::TempDir& tmp, const std::string& name) {
  const std::string dir = tmp.file(name);
  if (backend == Backend::kSqlite) return {dir, dir};
  auto& s = server();
  const std::string db = s.new_database_name();
  s.admin("CREATE DATABASE " + db);
  return {s.url(db) + "?dir=" + dir, dir};
}

Location copy_location(Backend backend, const Location& from, const bulwark::testing::TempDir& tmp,
                       const std::string& name) {
  const std::string dir = tmp.file(name);
  fs::copy(from.dir, dir, fs::copy_options::recursive);
  if (backend == Backend::kSqlite) return {dir, dir};
  auto& s = server();
  const std::string db = s.new_database_name();
  s.admin("CREATE DATABASE " + db + " TEMPLATE " + database_of(from.location));
  return {s.url(db) + "?dir=" + dir, dir};
}

std::string sql_shell_command(const Location& where, Backend backend, const std::string& sql) {
  if (backend == Backend::kSqlite) return "sqlite3 " + where.dir + "/registry.db '" + sql + "'";
  const std::string url = where.location.substr(0, where.location.find('?'));
  return server().psql() + " -X -q -v ON_ERROR_STOP=1 '" + url + "' -c '" + sql + "'";
}

std::string database_fingerprint(const Location& where, Backend backend) {
  if (backend == Backend::kSqlite) return "registry.db sha256 " + sha256_of_file(where.dir + "/registry.db");
  auto db = open_database(parse_location(where.location), false);
  std::string out;
  for (const std::string table :
       {"meta", "models", "versions", "stage_changes", "audit", "runs", "run_params", "run_metrics", "run_tags"}) {
    std::vector<std::string> rows;
    for (const auto& r : db->query("SELECT * FROM " + table, {})) {
      std::string line;
      for (size_t i = 0; i < r.size(); ++i) line += (r.is_null(i) ? std::string("NULL") : r.text(i)) + "\t";
      rows.push_back(line);
    }
    std::sort(rows.begin(), rows.end());
    out += table + ":\n";
    for (const auto& r : rows) out += "  " + r + "\n";
  }
  return out;
}

}  // namespace bulwark::registry::test
