// core/system.h — facts about the running process that users need to read results right:
// which BLAS the dynamic loader picked (Debian's alternatives decide it), and the core count; and
// the two process-wide settings the tensor work needs (malloc, BLAS threads).
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

// Runs OpenBLAS's matrix products on the calling thread. LibTorch parallelises its own operators
// with OpenMP (at::get_num_threads() threads); Debian's OpenBLAS (pthreads build) starts a pool of
// its own, one thread per core, whose threads keep spinning after each product — on a machine with
// as many cores as LibTorch threads the two pools fight for the cores: Square's queries ran 2.5x
// slower and a linear layer's product at 40-50 GFLOP/s (bench/square_queries, docs/BENCHMARKS.md).
// Leaves OpenBLAS as it is, and returns false, when OPENBLAS_NUM_THREADS is set or the BLAS loaded
// is not OpenBLAS; returns true once applied. Call it once at startup (the bulwark CLI does).
bool single_threaded_blas();

// Both of the above, as every bulwark command starts.
void tune_process_for_tensor_work();

}  // namespace bulwark
