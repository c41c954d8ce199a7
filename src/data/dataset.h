// data/dataset.h — labelled image datasets held as uint8 (in memory, or in a memory-mapped scratch
// file when over --max-memory), scaled to [0,1] per batch, and the one entry point that reads every
// format `--data` accepts (docs/data.md).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <torch/types.h>

namespace bulwark::data {

enum class Split { kTrain, kTest };

struct Dataset {
  std::string name;                      // "fashion-mnist" or the directory it came from
  std::string split;                     // "train", "test", "val", or "given" (one split named directly)
  torch::Tensor images;                  // uint8 [N, C, H, W]; on_disk(): a mapped scratch file
  torch::Tensor labels;                  // int64 [N]
  std::vector<std::string> class_names;  // index = label
  int64_t ignored_files = 0;             // image folders: files without an image extension (as torchvision)
  int64_t refused_files = 0;             // image folders with skip_bad: files that did not decode

  int64_t size() const { return labels.defined() ? labels.size(0) : 0; }
  // Whether the images live in a scratch file (data/disk_tensor.h), read a batch at a time: an image
  // folder over --max-memory. head() and select() of such a set stay on disk.
  bool on_disk() const;
  // Refuses a set on disk whose float copy would exceed `max_bytes`, naming `what`, how many images
  // would fit and `flag` (the one that sets how many are taken): for the commands that convert their
  // whole selection at once (attack, detect, harden's validation).
  void require_in_memory(int64_t max_bytes, const std::string& what, const std::string& flag) const;
  // Images as float in [0,1]; `indices` selects rows (int64), undefined = all.
  torch::Tensor inputs(const torch::Tensor& indices = {}) const;
  torch::Tensor targets(const torch::Tensor& indices = {}) const;
  // Rows [0, n) — `--limit N`; n larger than the dataset is an error naming `what` (the flag).
  Dataset head(int64_t n, const std::string& what = "--limit") const;
  Dataset select(const torch::Tensor& indices) const;
};

// The packaged Fashion-MNIST (Debian's dataset-fashion-mnist).
constexpr const char* kFashionMnistDir = "/usr/share/datasets/fashion-mnist";

// How to read a source. `shape` is the model's input C,H,W when a model is known: image folders are
// converted to its channels and resized + centre-cropped to its size; tensor formats (IDX, CIFAR,
// .npz) of another shape are refused, never converted. Empty: as stored (image folders as RGB, as
// torchvision's default loader does, all of one size).
struct LoadOptions {
  std::vector<int64_t> shape;
  bool skip_bad = false;  // image folders: count files that do not decode instead of failing
  // --max-memory: an image folder whose decoded set is larger is held in a scratch file on disk
  // (data/disk_tensor.h) and read a batch at a time; other formats larger than this are refused.
  int64_t max_memory_bytes = int64_t{4} << 30;
  int threads = 0;        // decode threads; 0 = all cores
  bool progress = true;   // a progress bar on stderr for folders of more than a few thousand files
};

// `source` (`--data`) is one of:
//  - "fashion-mnist", or a directory in the MNIST layout: {train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz];
//  - a CIFAR-10 / CIFAR-100 binary directory (data_batch_*.bin + test_batch.bin, or train.bin + test.bin),
//    or one such file;
//  - a NumPy .npz with x and y (one split), or x_train/y_train/x_test/y_test; or a directory with
//    train.npz and test.npz;
//  - an image folder in torchvision's ImageFolder layout: root/train/<class>/<file> and root/test/
//    (or root/val/), or one split root/<class>/<file> given directly.
// A source that is one split serves any `split` asked for; Dataset::split says "given".
Dataset load_dataset(const std::string& source, Split split, const LoadOptions& options = {});

// Training needs a held-out test set: refuses a source that is one split (Dataset::split "given").
void require_held_out(const Dataset& train, const Dataset& test);

// Throws invalid_argument naming `flag` when the images are not [N, C, H, W] of `shape`.
void check_shape(const Dataset& d, const std::vector<int64_t>& shape, const std::string& flag = "--data");

struct TrainValSplit {
  Dataset train;
  Dataset validation;
};

// Deterministic split: a seeded permutation; the last `validation_fraction` goes to validation.
TrainValSplit split_train_validation(const Dataset& d, double validation_fraction, uint64_t seed);

// Index batches over [0, n): shuffled by (seed, epoch) when `shuffle`, in order otherwise.
// The last batch may be smaller.
std::vector<torch::Tensor> batch_indices(int64_t n, int64_t batch_size, bool shuffle, uint64_t seed,
                                         int64_t epoch = 0);

// A seeded permutation of [0, n) that does not depend on LibTorch's global generator.
torch::Tensor seeded_permutation(int64_t n, uint64_t seed);

}  // namespace bulwark::data
