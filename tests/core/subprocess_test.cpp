// core/subprocess: the one way Bulwark starts a child. Output captured and bounded, stdin fed, the
// whole process group killed at the timeout or on terminate, a child that cannot start reported.
#include "core/subprocess.h"

#include <gtest/gtest.h>
#include <signal.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <memory>
#include <thread>

#include "core/cancel.h"
#include "core/error.h"
#include "core/files.h"
#include "test_util.h"

namespace bulwark {
namespace {

using testing::TempDir;

// Whether `pid` is gone (or a zombie nobody reaped yet): polled for up to 10 s.
bool process_gone(pid_t pid) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (std::chrono::steady_clock::now() < until) {
    std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
    std::string line;
    if (!std::getline(stat, line)) return true;
    const auto close = line.rfind(')');
    if (close != std::string::npos && close + 2 < line.size() && line[close + 2] == 'Z') return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return false;
}

pid_t read_pid(const std::string& path) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (std::chrono::steady_clock::now() < until) {
    std::ifstream in(path);
    pid_t pid = 0;
    if (in >> pid && pid > 0) return pid;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return 0;
}

TEST(RunProcess, CapturesBothStreamsAndTheExitCode) {
  const auto r = run_process({"/bin/sh", "-c", "echo out; echo err >&2; exit 3"}, "", 30);
  EXPECT_EQ(r.exit_code, 3);
  EXPECT_FALSE(r.timed_out);
  EXPECT_EQ(r.out, "out\n");
  EXPECT_EQ(r.err, "err\n");
  EXPECT_EQ(run_process({"/bin/sh", "-c", "kill -9 $$"}, "", 30).exit_code, 128 + 9);
}

TEST(RunProcess, FeedsStdinAndKeepsOnlyTheBoundOfItsOutput) {
  const std::string input(3 << 20, 'x');
  const auto r = run_process({"/bin/cat"}, input, 60, size_t{1} << 20);
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_EQ(r.out.size(), size_t{1} << 20);
  EXPECT_EQ(r.out_dropped, size_t{2} << 20);
  EXPECT_EQ(r.out, std::string(1 << 20, 'x'));
  // A child that exits without reading its stdin: no SIGPIPE for us, its exit code for the caller.
  EXPECT_EQ(run_process({"/bin/sh", "-c", "exit 4"}, input, 30).exit_code, 4);
}

TEST(RunProcess, KillsTheWholeGroupAtTheTimeout) {
  TempDir dir;
  const auto pid_file = dir.file("grandchild.pid");
  const auto started = std::chrono::steady_clock::now();
  const auto r = run_process({"/bin/sh", "-c", "sleep 60 & echo $! > " + pid_file + "; wait"}, "", 0.5);
  const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  EXPECT_TRUE(r.timed_out);
  EXPECT_EQ(r.exit_code, -1);
  EXPECT_LT(took, 10.0);
  const pid_t grandchild = read_pid(pid_file);
  ASSERT_GT(grandchild, 0);
  EXPECT_TRUE(process_gone(grandchild)) << "the child's own child outlived the timeout";
}

// The guard's stop: a flag set from another thread kills the group within the poll (100 ms) and
// throws Cancelled; a flag never set changes nothing.
TEST(RunProcess, ACancelFlagKillsTheGroupAndThrowsCancelled) {
  TempDir dir;
  const auto pid_file = dir.file("grandchild.pid");
  auto flag = std::make_shared<std::atomic<bool>>(false);
  std::thread canceller([&] {
    read_pid(pid_file);  // the child is running
    flag->store(true);
  });
  const auto started = std::chrono::steady_clock::now();
  EXPECT_THROW(run_process({"/bin/sh", "-c", "sleep 60 & echo $! > " + pid_file + "; wait"}, "", 60, 1 << 20, flag),
               Cancelled);
  const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  canceller.join();
  EXPECT_LT(took, 10.0) << "not the 60 s timeout";
  const pid_t grandchild = read_pid(pid_file);
  ASSERT_GT(grandchild, 0);
  EXPECT_TRUE(process_gone(grandchild)) << "the child's own child outlived the cancel";
  auto unset = std::make_shared<std::atomic<bool>>(false);
  EXPECT_EQ(run_process({"/bin/sh", "-c", "exit 5"}, "", 30, 1 << 20, unset).exit_code, 5);
}

TEST(RunProcess, AChildThatCannotStartIs127WithTheReason) {
  const auto r = run_process({"/nonexistent/kubectl", "get"}, "", 30);
  EXPECT_EQ(r.exit_code, 127);
  EXPECT_NE(r.err.find("cannot execute /nonexistent/kubectl"), std::string::npos) << r.err;
  EXPECT_EQ(run_process({}, "", 30).exit_code, 127);
}

TEST(Subprocess, WritesItsStreamsToFilesAndReportsTheExit) {
  TempDir dir;
  Subprocess p({{"/bin/sh", "-c", "echo to-out; echo to-err >&2; exit 5"}, dir.file("out"), dir.file("err")});
  EXPECT_EQ(p.wait(), 5);
  EXPECT_EQ(p.poll(), std::optional<int>(5));
  EXPECT_EQ(read_file(dir.file("out")), "to-out\n");
  EXPECT_EQ(read_file(dir.file("err")), "to-err\n");
  EXPECT_THROW(Subprocess({{"/nonexistent/bulwark"}, "", ""}), Error);
}

TEST(Subprocess, TerminateAsksThenKillsTheGroup) {
  TempDir dir;
  {  // exits on SIGTERM: no kill needed
    Subprocess p({{"/bin/sleep", "60"}, "", ""});
    EXPECT_FALSE(p.poll());
    bool killed = true;
    EXPECT_EQ(p.terminate(10, &killed), 128 + SIGTERM);
    EXPECT_FALSE(killed);
  }
  {  // ignores SIGTERM, and has a child: both killed after the grace
    const auto pid_file = dir.file("grandchild.pid");
    Subprocess p({{"/bin/sh", "-c", "trap '' TERM; sleep 60 & echo $! > " + pid_file + "; wait; wait"}, "", ""});
    const pid_t grandchild = read_pid(pid_file);
    ASSERT_GT(grandchild, 0);
    bool killed = false;
    EXPECT_EQ(p.terminate(0.3, &killed), 128 + SIGKILL);
    EXPECT_TRUE(killed);
    EXPECT_TRUE(process_gone(grandchild));
  }
  {  // the destructor kills and reaps a child still running
    pid_t pid = 0;
    {
      Subprocess p({{"/bin/sleep", "60"}, "", ""});
      pid = p.pid();
    }
    EXPECT_TRUE(process_gone(pid));
  }
}

}  // namespace
}  // namespace bulwark
