// data/cifar.h — the CIFAR-10 / CIFAR-100 binary version (cs.toronto.edu/~kriz/cifar.html), the
// files anyone downloads: CIFAR-10's data_batch_{1..5}.bin / test_batch.bin (one label byte, then
// 3072 bytes: the red, green and blue 32x32 planes) and CIFAR-100's train.bin / test.bin (a coarse
// and a fine label byte, then the planes; Bulwark uses the fine label, as torchvision does).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <torch/types.h>

namespace bulwark::data {

enum class CifarKind { kCifar10, kCifar100 };

constexpr int64_t kCifarImageBytes = 3 * 32 * 32;

struct CifarRecords {
  torch::Tensor images;  // uint8 [N, 3, 32, 32]
  torch::Tensor labels;  // int64 [N]
};

// One file; its length must be a whole number of records; labels must be < 10 (CIFAR-10) or
// < 100 (CIFAR-100 fine; coarse < 20). Errors name the file and the record.
CifarRecords read_cifar_file(const std::string& path, CifarKind kind);

// Writes records in the same format, atomically (CIFAR-100: coarse label written as 0).
void write_cifar_file(const std::string& path, CifarKind kind, const torch::Tensor& images,
                      const torch::Tensor& labels);

// Which CIFAR a directory holds, by its file names; false when it holds neither.
bool detect_cifar_dir(const std::string& dir, CifarKind* kind);

// The class names beside the files (batches.meta.txt, fine_label_names.txt), else "0".."K-1".
std::vector<std::string> cifar_class_names(const std::string& dir, CifarKind kind);

}  // namespace bulwark::data
