// core/system.h — facts about the running process that users need to read results right:
// which BLAS the dynamic loader picked (Debian's alternatives decide it), and the core count; and
// the one process-wide memory setting the tensor work needs.
#pragma once

#include <string>

namespace bulwark {

// Resolved path of the libblas.so.3 loaded into this process, e.g.
// ".../openblas-pthread/libblas.so.3 (OpenBLAS)", or "none loaded".
std::string loaded_blas();

int hardware_threads();

// Tells glibc's malloc to keep freed memory for the next allocation instead of handing it back
// to the kernel: blocks up to 32 MiB come from the heap (not a fresh mmap), and up to 256 MiB of
// free memory at the heap's top stays mapped. Every attack step, training step and served batch
// allocates and frees the same activation tensors (MBs each); with glibc's defaults the larger
// ones are mmapped and unmapped, or trimmed, on every pass, and each pass then page-faults its
// memory in again: the step ran 2.5-3x slower at batch ~120 (bench/attack_step, docs/BENCHMARKS.md).
// The cost: a process keeps up to its peak heap (plus 256 MiB) mapped after a burst.
// Leaves malloc as it is, and returns false, when the environment already tunes it
// (GLIBC_TUNABLES naming glibc.malloc, MALLOC_MMAP_THRESHOLD_ or MALLOC_TRIM_THRESHOLD_); returns
// true once applied. Call it once at startup, before threads allocate (the bulwark CLI does).
bool keep_freed_memory_for_reuse();

}  // namespace bulwark
