// data/disk_tensor.h — uint8 tensors kept in a memory-mapped scratch file instead of process memory:
// how a set larger than --max-memory is held (as FFCV and NumPy's memmap hold theirs). The file is
// unlinked as soon as it is made, so nothing is left behind however the process ends; its pages are
// the kernel's page cache, written back and dropped under memory pressure, never swap.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <torch/types.h>

namespace bulwark::data {

// Where scratch files go: $BULWARK_SCRATCH_DIR, else $TMPDIR, else /tmp.
std::string scratch_dir();

// A zero-filled uint8 tensor of `sizes`, backed by an unlinked file in scratch_dir(). Refuses, naming
// the directory and the variables that move it, when the file system has less free space than the
// tensor needs; `what` names the data in that message.
torch::Tensor disk_tensor(const std::vector<int64_t>& sizes, const std::string& what);

// Whether `t`'s storage is a disk_tensor mapping.
bool is_disk_tensor(const torch::Tensor& t);

// rows of `source` (uint8 [N, ...]) selected by `indices`, into a new disk_tensor, copied a bounded
// chunk at a time: the selection never sits whole in process memory.
torch::Tensor disk_index_select(const torch::Tensor& source, const torch::Tensor& indices, const std::string& what);

}  // namespace bulwark::data
