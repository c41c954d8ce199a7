#include "core/system.h"

#include <climits>
#include <cstdlib>
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

}  // namespace bulwark
