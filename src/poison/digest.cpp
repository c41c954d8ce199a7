#include "poison/digest.h"

#include <torch/torch.h>

#include "core/digest.h"

namespace bulwark::poison {

std::string dataset_digest(const data::Dataset& d) {
  const torch::Tensor images = d.images.to(torch::kUInt8).contiguous();
  const torch::Tensor labels = d.labels.to(torch::kInt64).contiguous();
  std::string bytes = "bulwark-dataset/1";
  for (int64_t s : images.sizes()) bytes += " " + std::to_string(s);
  bytes += "\n";
  bytes.append(reinterpret_cast<const char*>(images.data_ptr<uint8_t>()), static_cast<size_t>(images.numel()));
  // Labels as 8-byte little-endian integers, whatever the host's order.
  const auto* y = labels.data_ptr<int64_t>();
  for (int64_t i = 0; i < labels.numel(); ++i) {
    for (int b = 0; b < 8; ++b) bytes.push_back(static_cast<char>((static_cast<uint64_t>(y[i]) >> (8 * b)) & 0xff));
  }
  return sha256_hex(bytes);
}

}  // namespace bulwark::poison
