#include "attack/losses.h"

#include <torch/torch.h>

#include "core/error.h"

namespace bulwark::attack {

std::string to_string(Loss l) {
  switch (l) {
    case Loss::kCrossEntropy: return "ce";
    case Loss::kMargin: return "margin";
    case Loss::kDlr: return "dlr";
  }
  return "ce";
}

Loss parse_loss(const std::string& s) {
  if (s == "ce") return Loss::kCrossEntropy;
  if (s == "margin" || s == "cw") return Loss::kMargin;
  if (s == "dlr") return Loss::kDlr;
  throw invalid_argument("--loss: unknown loss '" + s + "' (known: ce, margin, dlr)");
}

torch::Tensor ce_loss(const torch::Tensor& logits, const torch::Tensor& y) {
  return torch::nn::functional::cross_entropy(logits, y,
                                              torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kNone));
}

torch::Tensor margin_loss(const torch::Tensor& logits, const torch::Tensor& y) {
  const auto z_y = logits.gather(1, y.unsqueeze(1)).squeeze(1);
  const auto others = logits.scatter(1, y.unsqueeze(1), -std::numeric_limits<float>::infinity());
  return others.amax(1) - z_y;
}

torch::Tensor dlr_loss(const torch::Tensor& logits, const torch::Tensor& y) {
  const auto [sorted, order] = logits.sort(1);  // ascending, as the reference
  const int64_t k = logits.size(1);
  const auto top_is_y = order.select(1, k - 1).eq(y).to(logits.dtype());
  const auto z_y = logits.gather(1, y.unsqueeze(1)).squeeze(1);
  const auto best_other = sorted.select(1, k - 2) * top_is_y + sorted.select(1, k - 1) * (1 - top_is_y);
  return -(z_y - best_other) / (sorted.select(1, k - 1) - sorted.select(1, k - 3) + 1e-12);
}

torch::Tensor dlr_targeted_loss(const torch::Tensor& logits, const torch::Tensor& y, const torch::Tensor& target) {
  const auto sorted = std::get<0>(logits.sort(1));
  const int64_t k = logits.size(1);
  const auto z_y = logits.gather(1, y.unsqueeze(1)).squeeze(1);
  const auto z_t = logits.gather(1, target.unsqueeze(1)).squeeze(1);
  return -(z_y - z_t) / (sorted.select(1, k - 1) - 0.5 * (sorted.select(1, k - 3) + sorted.select(1, k - 4)) + 1e-12);
}

torch::Tensor per_sample_loss(Loss loss, const torch::Tensor& logits, const torch::Tensor& y) {
  switch (loss) {
    case Loss::kCrossEntropy: return ce_loss(logits, y);
    case Loss::kMargin: return margin_loss(logits, y);
    case Loss::kDlr: return dlr_loss(logits, y);
  }
  return ce_loss(logits, y);
}

}  // namespace bulwark::attack
