// bench/child.h — one side of a bench in a child process: this program again, with
// BENCH_CHILD=<side> in its environment, printing one JSON line that the parent reads back.
//
// Why: the bulwark CLI sets glibc's malloc up for tensor work at startup
// (core/system.h: keep_freed_memory_for_reuse), a process-wide setting that cannot be undone. A
// bench that times Bulwark as it was before that setting runs that side in a child that never
// calls it, so the side sees glibc's default malloc, as `bulwark` did then.
#pragma once

#include <unistd.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace bulwark::bench {

// The side this process runs as ("" in the parent).
inline std::string child_side() {
  const char* side = std::getenv("BENCH_CHILD");
  return side ? side : "";
}

// The last line of a shell command's stdout, parsed as JSON, or null (the output goes to stderr).
inline nlohmann::json json_line_of(const std::string& cmd) {
  std::unique_ptr<FILE, int (*)(FILE*)> pipe(popen(cmd.c_str(), "r"), pclose);
  if (!pipe) return nullptr;
  std::string out;
  std::array<char, 4096> buf{};
  while (std::fgets(buf.data(), buf.size(), pipe.get())) out += buf.data();
  while (!out.empty() && out.back() == '\n') out.pop_back();
  const auto newline = out.rfind('\n');
  auto j = nlohmann::json::parse(newline == std::string::npos ? out : out.substr(newline + 1), nullptr, false);
  if (j.is_discarded()) {
    std::fprintf(stderr, "%s failed:\n%s\n", cmd.c_str(), out.c_str());
    return nullptr;
  }
  return j;
}

// Runs this program as `side` with `args` (each quoted for the shell); its JSON line, or null.
inline nlohmann::json run_child(const std::string& side, const std::vector<std::string>& args) {
  std::string cmd = "BENCH_CHILD=" + side + " /proc/" + std::to_string(::getpid()) + "/exe";
  for (const auto& a : args) cmd += " '" + a + "'";
  return json_line_of(cmd);
}

}  // namespace bulwark::bench
