// data/dataset.h — labelled image datasets held in memory as uint8, scaled to [0,1] per batch.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <torch/types.h>

namespace bulwark::data {

enum class Split { kTrain, kTest };

struct Dataset {
  std::string name;                      // "fashion-mnist" or the directory it came from
  torch::Tensor images;                  // uint8 [N, C, H, W]
  torch::Tensor labels;                  // int64 [N]
  std::vector<std::string> class_names;  // index = label

  int64_t size() const { return labels.defined() ? labels.size(0) : 0; }
  // Images as float in [0,1]; `indices` selects rows (int64), undefined = all.
  torch::Tensor inputs(const torch::Tensor& indices = {}) const;
  torch::Tensor targets(const torch::Tensor& indices = {}) const;
  // Rows [0, n) — `--limit N`; n larger than the dataset is an error naming `what` (the flag).
  Dataset head(int64_t n, const std::string& what = "--limit") const;
  Dataset select(const torch::Tensor& indices) const;
};

// The packaged Fashion-MNIST (Debian's dataset-fashion-mnist).
constexpr const char* kFashionMnistDir = "/usr/share/datasets/fashion-mnist";

// `source` is "fashion-mnist" or a directory in the MNIST layout:
// {train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]. Class names: Fashion-MNIST's for
// "fashion-mnist", "0".."9" otherwise.
Dataset load_dataset(const std::string& source, Split split);

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
