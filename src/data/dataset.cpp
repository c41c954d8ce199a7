#include "data/dataset.h"

#include <algorithm>
#include <random>

#include "core/error.h"
#include "core/files.h"
#include "data/cifar.h"
#include "data/disk_tensor.h"
#include "data/idx.h"
#include "data/image_folder.h"
#include "data/npz.h"

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

bool Dataset::on_disk() const { return is_disk_tensor(images); }

void Dataset::require_in_memory(int64_t max_bytes, const std::string& what, const std::string& flag) const {
  if (!on_disk()) return;
  const int64_t row_bytes = size() > 0 ? images.numel() / size() * 4 : 0;  // as float32
  if (row_bytes * size() <= max_bytes) return;
  throw invalid_argument(what + " converts its images at once: " + std::to_string(size()) + " images of " + name +
                         " need " + std::to_string((row_bytes * size()) >> 20) + " MiB as float, over the memory " +
                         "bound of " + std::to_string(max_bytes >> 20) + " MiB (--max-memory); at most " +
                         std::to_string(max_bytes / std::max<int64_t>(row_bytes, 1)) + " fit: lower " + flag +
                         ", or raise --max-memory");
}

Dataset Dataset::select(const torch::Tensor& indices) const {
  Dataset out = *this;
  out.images = on_disk() ? disk_index_select(images, indices, name + ": a selection of " +
                                                                  std::to_string(indices.numel()) + " images")
                         : images.index_select(0, indices);
  out.labels = labels.index_select(0, indices);
  return out;
}

namespace {

Dataset load_idx(const std::string& source, Split split) {
  const bool fashion = source == "fashion-mnist";
  const std::string dir = fashion ? kFashionMnistDir : source;
  const std::string prefix = split == Split::kTrain ? "train" : "t10k";
  Dataset d;
  d.name = fashion ? "fashion-mnist" : source;
  d.split = split == Split::kTrain ? "train" : "test";
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

bool has_idx(const std::string& dir) {
  for (const char* stem : {"train-images-idx3-ubyte", "t10k-images-idx3-ubyte"}) {
    if (file_exists(dir + "/" + stem) || file_exists(dir + "/" + stem + ".gz")) return true;
  }
  return false;
}

bool ends_with(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

std::string base_name(const std::string& path) {
  const auto slash = path.find_last_of('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

std::string dir_name(const std::string& path) {
  const auto slash = path.find_last_of('/');
  return slash == std::string::npos ? "." : path.substr(0, slash);
}

Dataset load_cifar(const std::string& dir, const std::vector<std::string>& files, CifarKind kind,
                   const std::string& split) {
  Dataset d;
  d.name = dir;
  d.split = split;
  d.class_names = cifar_class_names(dir_name(files.front()), kind);
  std::vector<torch::Tensor> images, labels;
  for (const auto& f : files) {
    auto r = read_cifar_file(f, kind);
    images.push_back(r.images);
    labels.push_back(r.labels);
  }
  d.images = torch::cat(images);
  d.labels = torch::cat(labels);
  return d;
}

Dataset load_cifar_dir(const std::string& dir, CifarKind kind, Split split) {
  std::vector<std::string> files;
  if (kind == CifarKind::kCifar10) {
    if (split == Split::kTrain) {
      for (int i = 1; i <= 5; ++i) files.push_back(dir + "/data_batch_" + std::to_string(i) + ".bin");
    } else {
      files.push_back(dir + "/test_batch.bin");
    }
  } else {
    files.push_back(dir + (split == Split::kTrain ? "/train.bin" : "/test.bin"));
  }
  for (const auto& f : files) {
    if (!file_exists(f)) throw not_found(dir + ": CIFAR directory without " + base_name(f));
  }
  return load_cifar(dir, files, kind, split == Split::kTrain ? "train" : "test");
}

Dataset load_cifar_file(const std::string& path) {
  const std::string name = base_name(path);
  CifarKind kind;
  if (name == "train.bin" || name == "test.bin") {
    kind = CifarKind::kCifar100;
  } else if (name == "test_batch.bin" || name.rfind("data_batch_", 0) == 0) {
    kind = CifarKind::kCifar10;
  } else {
    throw invalid_argument("--data " + path + ": a CIFAR file must keep its name (data_batch_N.bin or test_batch.bin "
                           "for CIFAR-10, train.bin or test.bin for CIFAR-100): the two formats differ by one byte "
                           "per record and Bulwark does not guess which");
  }
  return load_cifar(path, {path}, kind, "given");
}

Dataset load_npz(const std::string& path, const std::string& x_key, const std::string& y_key,
                 const std::string& split, const LoadOptions& o) {
  Dataset d;
  d.name = path;
  d.split = split;
  const auto x = read_npz_array(path, x_key, o.max_memory_bytes);
  const auto y = read_npz_array(path, y_key, o.max_memory_bytes);
  d.images = npy_images(x, path + ": array '" + x_key + "'");
  d.labels = npy_labels(y, path + ": array '" + y_key + "'");
  if (d.images.size(0) != d.labels.size(0)) {
    throw data_format(path + ": '" + x_key + "' has " + std::to_string(d.images.size(0)) + " images but '" + y_key +
                      "' has " + std::to_string(d.labels.size(0)) + " labels");
  }
  const int64_t min = d.labels.min().item<int64_t>(), max = d.labels.max().item<int64_t>();
  if (min < 0) throw data_format(path + ": '" + y_key + "' has a negative label (" + std::to_string(min) + ")");
  if (max >= 100000) throw data_format(path + ": '" + y_key + "' has label " + std::to_string(max) + " (limit 99999)");
  for (int64_t i = 0; i <= max; ++i) d.class_names.push_back(std::to_string(i));
  return d;
}

Dataset load_npz_file(const std::string& path, Split split, const LoadOptions& o) {
  const auto names = npz_array_names(path);
  auto has = [&](const std::string& n) { return std::find(names.begin(), names.end(), n) != names.end(); };
  if (has("x") && has("y")) return load_npz(path, "x", "y", "given", o);
  const std::string s = split == Split::kTrain ? "train" : "test";
  if (has("x_" + s) && has("y_" + s)) return load_npz(path, "x_" + s, "y_" + s, s, o);
  throw data_format(path + ": needs arrays x and y (one split) or x_train, y_train, x_test, y_test; it has " +
                    std::to_string(names.size()) + " arrays");
}

const char* kLayouts =
    "accepted: fashion-mnist; an MNIST-layout IDX directory; a CIFAR-10/100 binary directory or file; a .npz "
    "with x and y; a directory with train.npz and test.npz; an image folder root/<class>/<image>, or "
    "root/{train,test or val}/<class>/<image> (docs/data.md)";

}  // namespace

Dataset load_dataset(const std::string& source, Split split, const LoadOptions& options) {
  Dataset d;
  const std::string split_dir = split == Split::kTrain ? "train" : "test";
  CifarKind kind;
  if (source == "fashion-mnist") {
    d = load_idx(source, split);
  } else if (file_exists(source) && !directory_exists(source)) {
    if (ends_with(source, ".npz")) {
      d = load_npz_file(source, split, options);
    } else if (ends_with(source, ".bin")) {
      d = load_cifar_file(source);
    } else {
      throw invalid_argument("--data " + source + ": a file must be a .npz or a CIFAR .bin; " + kLayouts);
    }
  } else if (!directory_exists(source)) {
    throw not_found("--data " + source + ": not a directory, not a file and not a known dataset; " + kLayouts);
  } else if (has_idx(source)) {
    d = load_idx(source, split);
  } else if (detect_cifar_dir(source, &kind)) {
    d = load_cifar_dir(source, kind, split);
  } else if (file_exists(source + "/train.npz") || file_exists(source + "/test.npz")) {
    const std::string f = source + "/" + split_dir + ".npz";
    if (!file_exists(f)) throw not_found("--data " + source + ": has no " + split_dir + ".npz");
    d = load_npz(f, "x", "y", split_dir, options);
  } else if (directory_exists(source + "/train") &&
             (directory_exists(source + "/test") || directory_exists(source + "/val"))) {
    std::string s = split_dir;
    if (split == Split::kTest && !directory_exists(source + "/test")) s = "val";
    d = read_image_folder(source + "/" + s, options);
    d.name = source;
    d.split = s;
  } else if (directory_exists(source + "/train")) {
    throw data_format("--data " + source + ": has train/ but no test/ or val/ beside it; give the test split too, or "
                      "name a split folder directly (" + source + "/train)");
  } else if (is_image_folder(source)) {
    d = read_image_folder(source, options);
    d.split = "given";
  } else {
    throw not_found("--data " + source + ": holds no dataset Bulwark reads; " + kLayouts);
  }
  if (!options.shape.empty()) check_shape(d, options.shape);
  return d;
}

void require_held_out(const Dataset& train, const Dataset& test) {
  if (train.split == "given" || test.split == "given") {
    throw invalid_argument("--data " + train.name + " is one split: training and its test need both, e.g. an image "
                           "folder root/train/<class>/... and root/test/<class>/..., a CIFAR directory, or a .npz "
                           "with x_train, y_train, x_test, y_test");
  }
}

void check_shape(const Dataset& d, const std::vector<int64_t>& shape, const std::string& flag) {
  const auto s = d.images.sizes();
  if (shape.size() == 3 && s.size() == 4 && s[1] == shape[0] && s[2] == shape[1] && s[3] == shape[2]) return;
  auto text = [](at::IntArrayRef v) {
    std::string t;
    for (const auto x : v) t += (t.empty() ? "" : "x") + std::to_string(x);
    return t;
  };
  throw invalid_argument(flag + " " + d.name + ": images are " + text(s.slice(1)) + " but the model takes " +
                         text(shape) + "; Bulwark converts image folders but never reshapes tensor datasets "
                         "(use data of the model's shape, or a model for this data)");
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
