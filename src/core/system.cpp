#include "core/system.h"

#include <dlfcn.h>
#include <malloc.h>

#include <climits>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <thread>

namespace bulwark {

std::string loaded_blas() {
  std::ifstream maps("/proc/self/maps");
  std::string line;
  while (std::getline(maps, line)) {
    const auto slash = line.find('/');
    if (slash == std::string::npos) continue;
    const std::string path = line.substr(slash);
    if (path.find("libblas.so") == std::string::npos && path.find("libopenblas") == std::string::npos) continue;
    char resolved[PATH_MAX];
    const std::string real = ::realpath(path.c_str(), resolved) ? resolved : path;
    std::string family = "reference BLAS (slow)";
    if (real.find("openblas") != std::string::npos) family = "OpenBLAS";
    else if (real.find("blis") != std::string::npos) family = "BLIS";
    else if (real.find("mkl") != std::string::npos) family = "MKL";
    else if (real.find("atlas") != std::string::npos) family = "ATLAS";
    return real + " (" + family + ")";
  }
  return "none loaded";
}

int hardware_threads() {
  const unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : static_cast<int>(n);
}

bool keep_freed_memory_for_reuse() {
  const char* tunables = std::getenv("GLIBC_TUNABLES");
  if ((tunables && std::strstr(tunables, "glibc.malloc.")) || std::getenv("MALLOC_MMAP_THRESHOLD_") ||
      std::getenv("MALLOC_TRIM_THRESHOLD_")) {
    return false;
  }
  // 32 MiB is the largest mmap threshold glibc accepts on 64-bit (HEAP_MAX_SIZE / 2). Setting it
  // also ends glibc's dynamic threshold, which only ever rose to the size of the last freed block.
  constexpr int kMmapThreshold = 32 << 20, kTrimThreshold = 256 << 20;
  return mallopt(M_MMAP_THRESHOLD, kMmapThreshold) == 1 && mallopt(M_TRIM_THRESHOLD, kTrimThreshold) == 1;
}

bool single_threaded_blas() {
  if (std::getenv("OPENBLAS_NUM_THREADS")) return false;
  // Looked up rather than linked: the BLAS is whatever Debian's alternatives put behind libblas.so.3.
  using SetThreads = void (*)(int);
  auto* set = reinterpret_cast<SetThreads>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"));
  if (set == nullptr) return false;
  set(1);
  return true;
}

void tune_process_for_tensor_work() {
  keep_freed_memory_for_reuse();
  single_threaded_blas();
}

}  // namespace bulwark
