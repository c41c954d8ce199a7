#include "data/cifar.h"

#include <torch/torch.h>

#include <cstring>
#include <fstream>
#include <sstream>

#include "core/error.h"
#include "core/files.h"

namespace bulwark::data {
namespace {

int64_t label_bytes(CifarKind kind) { return kind == CifarKind::kCifar10 ? 1 : 2; }

}  // namespace

CifarRecords read_cifar_file(const std::string& path, CifarKind kind) {
  if (!file_exists(path)) throw not_found(path + ": no such CIFAR file");
  const std::string bytes = read_file(path);
  const int64_t record = label_bytes(kind) + kCifarImageBytes;
  const auto size = static_cast<int64_t>(bytes.size());
  if (size == 0 || size % record != 0) {
    throw data_format(path + ": " + std::to_string(size) + " bytes is not a whole number of " +
                      std::to_string(record) + "-byte " + (kind == CifarKind::kCifar10 ? "CIFAR-10" : "CIFAR-100") +
                      " records (truncated, or the other CIFAR's file)");
  }
  const int64_t n = size / record;
  CifarRecords out;
  out.images = torch::empty({n, 3, 32, 32}, torch::kUInt8);
  out.labels = torch::empty({n}, torch::kInt64);
  auto* img = out.images.data_ptr<uint8_t>();
  auto* lab = out.labels.data_ptr<int64_t>();
  const auto* in = reinterpret_cast<const uint8_t*>(bytes.data());
  const int64_t classes = kind == CifarKind::kCifar10 ? 10 : 100;
  for (int64_t i = 0; i < n; ++i, in += record) {
    if (kind == CifarKind::kCifar100 && in[0] >= 20) {
      throw data_format(path + ": record " + std::to_string(i) + " has coarse label " + std::to_string(in[0]) +
                        ", outside 0..19");
    }
    const int64_t label = in[label_bytes(kind) - 1];
    if (label >= classes) {
      throw data_format(path + ": record " + std::to_string(i) + " has label " + std::to_string(label) +
                        ", outside 0.." + std::to_string(classes - 1));
    }
    lab[i] = label;
    std::memcpy(img + i * kCifarImageBytes, in + label_bytes(kind), kCifarImageBytes);
  }
  return out;
}

void write_cifar_file(const std::string& path, CifarKind kind, const torch::Tensor& images,
                      const torch::Tensor& labels) {
  if (images.scalar_type() != torch::kUInt8 || images.dim() != 4 || images.size(1) != 3 || images.size(2) != 32 ||
      images.size(3) != 32) {
    throw invalid_argument("CIFAR images must be uint8 [N, 3, 32, 32]");
  }
  if (labels.dim() != 1 || labels.size(0) != images.size(0)) throw invalid_argument("CIFAR labels must be [N]");
  const auto img = images.contiguous();
  const auto lab = labels.to(torch::kInt64).contiguous();
  const int64_t classes = kind == CifarKind::kCifar10 ? 10 : 100;
  std::string out;
  out.reserve(static_cast<size_t>(images.size(0) * (label_bytes(kind) + kCifarImageBytes)));
  for (int64_t i = 0; i < images.size(0); ++i) {
    const int64_t label = lab[i].item<int64_t>();
    if (label < 0 || label >= classes) throw invalid_argument("CIFAR label " + std::to_string(label) + " out of range");
    if (kind == CifarKind::kCifar100) out.push_back('\0');
    out.push_back(static_cast<char>(label));
    out.append(reinterpret_cast<const char*>(img.data_ptr<uint8_t>()) + i * kCifarImageBytes, kCifarImageBytes);
  }
  atomic_write_file(path, out);
}

bool detect_cifar_dir(const std::string& dir, CifarKind* kind) {
  if (file_exists(dir + "/data_batch_1.bin") || file_exists(dir + "/test_batch.bin")) {
    *kind = CifarKind::kCifar10;
    return true;
  }
  if (file_exists(dir + "/train.bin") || file_exists(dir + "/test.bin")) {
    *kind = CifarKind::kCifar100;
    return true;
  }
  return false;
}

std::vector<std::string> cifar_class_names(const std::string& dir, CifarKind kind) {
  const int64_t classes = kind == CifarKind::kCifar10 ? 10 : 100;
  const std::string meta = dir + (kind == CifarKind::kCifar10 ? "/batches.meta.txt" : "/fine_label_names.txt");
  std::vector<std::string> names;
  if (file_exists(meta)) {
    std::istringstream lines(read_file(meta));
    for (std::string line; std::getline(lines, line);) {
      while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
      if (!line.empty()) names.push_back(line);
    }
    if (static_cast<int64_t>(names.size()) != classes) {
      throw data_format(meta + ": has " + std::to_string(names.size()) + " class names, expected " +
                        std::to_string(classes));
    }
    return names;
  }
  for (int64_t i = 0; i < classes; ++i) names.push_back(std::to_string(i));
  return names;
}

}  // namespace bulwark::data
