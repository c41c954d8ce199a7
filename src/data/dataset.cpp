#include "data/dataset.h"

#include <random>

#include "core/error.h"
#include "core/files.h"
#include "data/idx.h"

namespace bulwark::data {
namespace {

const std::vector<std::string> kFashionClasses = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                                  "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};

std::string find_idx_file(const std::string& dir, const std::string& stem) {
  for (const std::string& candidate : {dir + "/" + stem + ".gz", dir + "/" + stem}) {
    if (file_exists(candidate)) return candidate;
  }
  throw not_found(dir + ": missing " + stem + " (or " + stem + ".gz)");
}

}  // namespace

torch::Tensor Dataset::inputs(const torch::Tensor& indices) const {
  const torch::Tensor rows = indices.defined() ? images.index_select(0, indices) : images;
  return rows.to(torch::kFloat32).div_(255.0f);
}

torch::Tensor Dataset::targets(const torch::Tensor& indices) const {
  return indices.defined() ? labels.index_select(0, indices) : labels;
}

Dataset Dataset::head(int64_t n, const std::string& what) const {
  if (n <= 0) throw invalid_argument(what + " must be positive, got " + std::to_string(n));
  if (n > size()) {
    throw invalid_argument(what + " " + std::to_string(n) + " is larger than the dataset (" + name + " has " +
                           std::to_string(size()) + " images)");
  }
  Dataset out = *this;
  out.images = images.narrow(0, 0, n);
  out.labels = labels.narrow(0, 0, n);
  return out;
}

Dataset Dataset::select(const torch::Tensor& indices) const {
  Dataset out = *this;
  out.images = images.index_select(0, indices);
  out.labels = labels.index_select(0, indices);
  return out;
}

Dataset load_dataset(const std::string& source, Split split) {
  const bool fashion = source == "fashion-mnist";
  const std::string dir = fashion ? kFashionMnistDir : source;
  if (!fashion && !directory_exists(dir)) {
    throw not_found("--data " + source + ": not a directory and not a known dataset (known: fashion-mnist)");
  }
  const std::string prefix = split == Split::kTrain ? "train" : "t10k";
  Dataset d;
  d.name = fashion ? "fashion-mnist" : source;
  d.class_names = fashion ? kFashionClasses : std::vector<std::string>{};
  if (!fashion) {
    for (int i = 0; i < 10; ++i) d.class_names.push_back(std::to_string(i));
  }
  const std::string images_path = find_idx_file(dir, prefix + "-images-idx3-ubyte");
  const std::string labels_path = find_idx_file(dir, prefix + "-labels-idx1-ubyte");
  d.images = read_idx_images(images_path);
  d.labels = read_idx_labels(labels_path, static_cast<int64_t>(d.class_names.size()));
  if (d.images.size(0) != d.labels.size(0)) {
    throw data_format(labels_path + ": has " + std::to_string(d.labels.size(0)) + " labels but " + images_path +
                      " has " + std::to_string(d.images.size(0)) + " images");
  }
  return d;
}

torch::Tensor seeded_permutation(int64_t n, uint64_t seed) {
  std::vector<int64_t> order(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) order[static_cast<size_t>(i)] = i;
  std::mt19937_64 rng(seed);
  // Fisher-Yates with our own draw so the order is the same on every standard library.
  for (int64_t i = n - 1; i > 0; --i) {
    const auto j = static_cast<int64_t>(rng() % static_cast<uint64_t>(i + 1));
    std::swap(order[static_cast<size_t>(i)], order[static_cast<size_t>(j)]);
  }
  return torch::tensor(order, torch::kInt64);
}

TrainValSplit split_train_validation(const Dataset& d, double validation_fraction, uint64_t seed) {
  if (!(validation_fraction >= 0.0 && validation_fraction < 1.0)) {
    throw invalid_argument("validation fraction must be in [0, 1), got " + std::to_string(validation_fraction));
  }
  const int64_t n = d.size();
  const auto n_val = static_cast<int64_t>(static_cast<double>(n) * validation_fraction);
  const torch::Tensor perm = seeded_permutation(n, seed ^ 0x5eed5a1177ULL);
  TrainValSplit out;
  out.train = d.select(perm.narrow(0, 0, n - n_val));
  out.validation = d.select(perm.narrow(0, n - n_val, n_val));
  return out;
}

std::vector<torch::Tensor> batch_indices(int64_t n, int64_t batch_size, bool shuffle, uint64_t seed,
                                         int64_t epoch) {
  if (batch_size <= 0) throw invalid_argument("batch size must be positive, got " + std::to_string(batch_size));
  const torch::Tensor order =
      shuffle ? seeded_permutation(n, seed * 1000003ULL + static_cast<uint64_t>(epoch)) : torch::arange(n);
  std::vector<torch::Tensor> out;
  for (int64_t start = 0; start < n; start += batch_size) {
    out.push_back(order.narrow(0, start, std::min(batch_size, n - start)));
  }
  return out;
}

}  // namespace bulwark::data
