// data/idx.h — reader for the IDX format used by MNIST and Fashion-MNIST (gzip or raw).
// Every failure names the file and what is wrong with it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <torch/types.h>

namespace bulwark::data {

// A decoded IDX file of unsigned bytes (type code 0x08), the only type the datasets use.
struct IdxArray {
  std::vector<int64_t> dims;
  std::vector<uint8_t> values;
};

// Reads and validates one IDX file: magic number (0x0000 08 NN), 1 <= NN <= 4 dimensions,
// non-zero sizes below kMaxIdxElements in total, exact payload length (truncated or trailing
// bytes are errors). `.gz` files are decompressed transparently.
IdxArray read_idx(const std::string& path);

constexpr int64_t kMaxIdxElements = int64_t{1} << 31;

// Images as uint8 [N, 1, H, W]; the file must have 3 dimensions.
torch::Tensor read_idx_images(const std::string& path);
// Labels as int64 [N]; the file must have 1 dimension and labels must be < num_classes.
torch::Tensor read_idx_labels(const std::string& path, int64_t num_classes);

}  // namespace bulwark::data
