#include "poison/badnets.h"

#include <cmath>

#include <torch/torch.h>

#include "core/error.h"

namespace bulwark::poison {

BadNetsOptions::BadNetsOptions(int64_t target, double rate) : target_(target), rate_(rate) {
  if (target < 0) throw invalid_argument("badnets target class must be >= 0, got " + std::to_string(target));
  if (!(rate > 0 && rate <= 1)) throw invalid_argument("badnets rate must be in (0, 1], got " + std::to_string(rate));
}

BadNetsOptions& BadNetsOptions::mode(BadNetsMode v) {
  mode_ = v;
  return *this;
}

BadNetsOptions& BadNetsOptions::source(int64_t v) {
  if (v < 0 || v == target_) {
    throw invalid_argument("badnets source class must be >= 0 and not the target " + std::to_string(target_) +
                           ", got " + std::to_string(v));
  }
  source_ = v;
  return *this;
}

BadNetsOptions& BadNetsOptions::patch_size(int64_t v) {
  if (v < 1 || v > 16) throw invalid_argument("badnets patch size must be in [1, 16], got " + std::to_string(v));
  patch_size_ = v;
  return *this;
}

BadNetsOptions& BadNetsOptions::seed(uint64_t v) {
  seed_ = v;
  return *this;
}

nlohmann::json BadNetsOptions::to_json() const {
  nlohmann::json j = {{"target", target_},
                      {"rate", rate_},
                      {"mode", mode_ == BadNetsMode::kOneToOne ? "one-to-one" : "all-to-one"},
                      {"patch_size", patch_size_},
                      {"seed", seed_}};
  if (mode_ == BadNetsMode::kOneToOne) j["source"] = source_;
  return j;
}

torch::Tensor stamp_trigger(const torch::Tensor& images, int64_t p) {
  if (images.dim() != 4 || images.scalar_type() != torch::kUInt8) {
    throw invalid_argument("stamp_trigger takes uint8 images [N, C, H, W]");
  }
  const int64_t h = images.size(2), w = images.size(3);
  if (p + 1 > h || p + 1 > w) {
    throw invalid_argument("a " + std::to_string(p) + "-pixel trigger does not fit " + std::to_string(h) + "x" +
                           std::to_string(w) + " images");
  }
  const torch::Tensor ij = torch::arange(p).view({p, 1}) + torch::arange(p).view({1, p});
  const torch::Tensor pattern = ij.remainder(2).eq(0).to(torch::kUInt8) * 255;
  torch::Tensor out = images.clone();
  using torch::indexing::Slice;
  out.index_put_({Slice(), Slice(), Slice(h - 1 - p, h - 1), Slice(w - 1 - p, w - 1)}, pattern);
  return out;
}

namespace {

// Rows the attack draws its copies from (and, on a test set, the rows its success is measured on).
torch::Tensor attacked_rows(const torch::Tensor& labels, const BadNetsOptions& o) {
  const torch::Tensor mask = o.mode() == BadNetsMode::kOneToOne ? labels.eq(o.source()) : labels.ne(o.target());
  return torch::nonzero(mask).squeeze(1);
}

void check_classes(const data::Dataset& d, const BadNetsOptions& o) {
  const int64_t classes = static_cast<int64_t>(d.class_names.size());
  if (o.target() >= classes) {
    throw invalid_argument("badnets target " + std::to_string(o.target()) + " is not a class of the data (" +
                           std::to_string(classes) + " classes)");
  }
  if (o.mode() == BadNetsMode::kOneToOne && (o.source() < 0 || o.source() >= classes)) {
    throw invalid_argument("one-to-one badnets needs a source class in [0, " + std::to_string(classes) + "), got " +
                           std::to_string(o.source()));
  }
}

}  // namespace

PoisonedSet badnets(const data::Dataset& clean, const BadNetsOptions& o) {
  check_classes(clean, o);
  const int64_t n = clean.size();
  const int64_t count = std::llround(o.rate() * static_cast<double>(n));
  const torch::Tensor pool = attacked_rows(clean.labels, o);
  if (count < 1 || count > pool.size(0)) {
    throw invalid_argument("badnets rate " + std::to_string(o.rate()) + " asks for " + std::to_string(count) +
                           " poisoned images but " + std::to_string(pool.size(0)) + " rows can be copied");
  }
  const torch::Tensor picked =
      std::get<0>(pool.index_select(0, data::seeded_permutation(pool.size(0), o.seed()).narrow(0, 0, count)).sort());

  const torch::Tensor images = torch::cat({clean.images, stamp_trigger(clean.images.index_select(0, picked), o.patch_size())});
  const torch::Tensor labels = torch::cat({clean.labels, torch::full({count}, o.target(), torch::kInt64)});
  const torch::Tensor origin = torch::cat({torch::full({n}, -1, torch::kInt64), picked});
  // Interleaved, so a scan (or `--limit`) cannot tell poison by its position.
  const torch::Tensor order = data::seeded_permutation(n + count, o.seed() ^ 0x9e3779b97f4a7c15ULL);

  PoisonedSet out;
  out.data = clean;
  out.data.images = images.index_select(0, order).contiguous();
  out.data.labels = labels.index_select(0, order).contiguous();
  out.origin = origin.index_select(0, order).contiguous();
  out.is_poison = out.origin.ge(0);
  out.poisoned = count;
  return out;
}

double attack_success_rate(const model::Model& m, const data::Dataset& test, const BadNetsOptions& o) {
  check_classes(test, o);
  const torch::Tensor rows = attacked_rows(test.labels, o);
  if (rows.size(0) == 0) throw invalid_argument("the test set has no image of the attacked classes");
  const torch::Tensor x = stamp_trigger(test.images.index_select(0, rows), o.patch_size()).to(torch::kFloat32).div_(255.0f);
  const torch::Tensor predicted = m.predict_logits(x).argmax(1);
  return predicted.eq(o.target()).to(torch::kFloat64).mean().item<double>();
}

}  // namespace bulwark::poison
