// data/npz.h — NumPy .npz archives (numpy.savez / savez_compressed: a zip of .npy arrays), read with
// libzip. Images are uint8 [N,H,W,C] or [N,C,H,W] under "x" (or "x_train"/"x_test", Keras's names),
// labels any integer type under "y" (or "y_train"/"y_test").
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <torch/types.h>

namespace bulwark::data {

// One array of an archive: its NumPy dtype ("|u1", "<i8", ...) and shape, values as stored.
struct NpyArray {
  std::string dtype;
  std::vector<int64_t> shape;
  std::string bytes;
};

// The array `name` (without ".npy") of the archive; `max_bytes` bounds its uncompressed size.
// Fortran order, big-endian or object dtypes are refused. Errors name the file and the array.
NpyArray read_npz_array(const std::string& path, const std::string& name, int64_t max_bytes);
// Names of the arrays in the archive (without ".npy").
std::vector<std::string> npz_array_names(const std::string& path);

// Parses one .npy file's bytes (format versions 1-3).
NpyArray parse_npy(const std::string& bytes, const std::string& where);

// Writes an uncompressed .npz holding x (uint8 [N,...]) and y (int64 [N]), as numpy.savez does.
void write_npz(const std::string& path, const torch::Tensor& x, const torch::Tensor& y);

// Images from an array: uint8 [N,H,W,C] (C in 1,3,4, channels last, NumPy's and PIL's layout) or
// [N,C,H,W] (C in 1,3,4, PyTorch's layout); [N,H,W] is one channel. A shape that reads both ways
// ([N,3,32,3]) is refused with a message that says how to fix it.
torch::Tensor npy_images(const NpyArray& a, const std::string& where);
// Labels from an integer array [N], as int64.
torch::Tensor npy_labels(const NpyArray& a, const std::string& where);

}  // namespace bulwark::data
