// core/system.h — facts about the running process that users need to read results right:
// which BLAS the dynamic loader picked (Debian's alternatives decide it), and the core count.
#pragma once

#include <string>

namespace bulwark {

// Resolved path of the libblas.so.3 loaded into this process, e.g.
// ".../openblas-pthread/libblas.so.3 (OpenBLAS)", or "none loaded".
std::string loaded_blas();

int hardware_threads();

}  // namespace bulwark
