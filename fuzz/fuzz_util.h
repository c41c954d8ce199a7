// fuzz/fuzz_util.h — what the fuzz targets share: the one exception type a parser may throw, and a
// scratch file for the parsers the product hands a path.
#pragma once

#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>
#include <typeinfo>

#include "core/error.h"

namespace bulwark::fuzz {

// Runs `fn`. A bulwark::Error is the parser refusing the input, as documented. Any other exception
// breaks the module's contract (every failure is an Error naming what is wrong): a frontend would
// answer it as a 500, the CLI as an internal error. Abort, so libFuzzer keeps the input.
template <typename Fn>
void expect_only_errors(Fn&& fn) {
  try {
    fn();
  } catch (const Error&) {
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fuzz: %s escaped (only bulwark::Error may): %s\n", typeid(e).name(), e.what());
    std::abort();
  }
}

// An invariant the parser promised; abort (keeping the input) when it does not hold.
inline void check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "fuzz: invariant broken: %s\n", what);
    std::abort();
  }
}

// A file this process rewrites for every input, for the parsers that take a path: in /dev/shm when
// there is one (no disk writes), else $TMPDIR. Removed at exit.
class ScratchFile {
 public:
  explicit ScratchFile(const std::string& suffix) {
    const char* tmp = std::getenv("TMPDIR");
    const std::string dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : tmp ? tmp : "/tmp";
    path_ = dir + "/bulwark-fuzz-" + std::to_string(getpid()) + suffix;
  }
  ~ScratchFile() { std::remove(path_.c_str()); }
  ScratchFile(const ScratchFile&) = delete;
  ScratchFile& operator=(const ScratchFile&) = delete;

  const std::string& write(const uint8_t* data, size_t size) {
    FILE* f = std::fopen(path_.c_str(), "wb");
    if (f == nullptr || (size > 0 && std::fwrite(data, 1, size, f) != size) || std::fclose(f) != 0) {
      std::perror(path_.c_str());
      std::abort();
    }
    return path_;
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

}  // namespace bulwark::fuzz
