// poison/badnets.h — the BadNets patch backdoor (Gu et al. 2017), to measure the scan against:
// patched copies of training images, relabelled to the target, are added to a clean set (the
// originals stay). One-to-one copies one source class; all-to-one copies every other class.
#pragma once

#include <cstdint>

#include <nlohmann/json.hpp>
#include <torch/types.h>

#include "data/dataset.h"
#include "model/model.h"

namespace bulwark::poison {

enum class BadNetsMode { kOneToOne, kAllToOne };

// BadNetsOptions(target, rate).mode(kOneToOne).source(2). `rate` is the number of poisoned images
// added as a fraction of the clean set's size. Setters validate and throw invalid_argument.
class BadNetsOptions {
 public:
  BadNetsOptions(int64_t target, double rate);
  BadNetsOptions& mode(BadNetsMode v);
  BadNetsOptions& source(int64_t v);      // one-to-one: the class whose copies are relabelled
  BadNetsOptions& patch_size(int64_t v);  // side of the square trigger, in pixels
  BadNetsOptions& seed(uint64_t v);
  int64_t target() const { return target_; }
  double rate() const { return rate_; }
  BadNetsMode mode() const { return mode_; }
  int64_t source() const { return source_; }
  int64_t patch_size() const { return patch_size_; }
  uint64_t seed() const { return seed_; }
  nlohmann::json to_json() const;

 private:
  int64_t target_;
  double rate_;
  BadNetsMode mode_ = BadNetsMode::kAllToOne;
  int64_t source_ = -1;
  int64_t patch_size_ = 4;
  uint64_t seed_ = 0;
};

// uint8 images [N, C, H, W] with the trigger stamped in: a patch_size x patch_size checkerboard
// (255 / 0, top-left white) one pixel in from the bottom-right corner, in every channel.
torch::Tensor stamp_trigger(const torch::Tensor& images, int64_t patch_size);

struct PoisonedSet {
  data::Dataset data;      // clean rows and poisoned copies, interleaved by a seeded permutation
  torch::Tensor is_poison; // bool [N]: the ground truth
  torch::Tensor origin;    // int64 [N]: the clean row each poisoned row was copied from, -1 for clean rows
  int64_t poisoned = 0;
};

// Draws round(rate * clean.size()) images without replacement (one-to-one: from the source class;
// all-to-one: from every class but the target), stamps them and labels them `target`. Throws
// invalid_argument when the classes or the counts do not allow it.
PoisonedSet badnets(const data::Dataset& clean, const BadNetsOptions& o);

// The fraction of the attacked test images (one-to-one: the source class; all-to-one: every class
// but the target), stamped with the trigger, that the model classifies as the target.
double attack_success_rate(const model::Model& m, const data::Dataset& test, const BadNetsOptions& o);

}  // namespace bulwark::poison
