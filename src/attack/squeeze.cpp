#include "attack/squeeze.h"

#include <torch/torch.h>

#include <sstream>
#include <vector>

#include "core/error.h"

namespace bulwark::attack {

Preprocess bit_depth(int bits, double lo, double hi) {
  if (bits < 1 || bits > 16) throw invalid_argument("bits:N needs 1 <= N <= 16, got " + std::to_string(bits));
  const double levels = std::pow(2.0, bits) - 1;
  return [=](const torch::Tensor& x) { return torch::round((x - lo) / (hi - lo) * levels) / levels * (hi - lo) + lo; };
}

Preprocess median_smoothing(int k) {
  if (k < 2 || k > 7) throw invalid_argument("median:K needs 2 <= K <= 7, got " + std::to_string(k));
  return [k](const torch::Tensor& x) {
    // Pad so the output keeps the input's size (extra pad at the end for even k, as Xu et al.).
    const int64_t before = (k - 1) / 2, after = k / 2;
    const auto padded = torch::nn::functional::pad(
        x, torch::nn::functional::PadFuncOptions({before, after, before, after}).mode(torch::kReflect));
    const auto patches = padded.unfold(2, k, 1).unfold(3, k, 1);  // [N, C, H, W, k, k]
    return std::get<0>(patches.reshape({x.size(0), x.size(1), x.size(2), x.size(3), k * k}).median(-1));
  };
}

Preprocess parse_squeezer(const std::string& spec, double lo, double hi, const std::string& flag) {
  std::vector<Preprocess> chain;
  std::stringstream in(spec);
  std::string item;
  while (std::getline(in, item, '+')) {
    const auto colon = item.find(':');
    const std::string kind = item.substr(0, colon);
    int value = 0;
    try {
      value = colon == std::string::npos ? 0 : std::stoi(item.substr(colon + 1));
    } catch (const std::exception&) {
      throw invalid_argument(flag + ": '" + item + "' needs a number after ':'");
    }
    if (kind == "bits") chain.push_back(bit_depth(value, lo, hi));
    else if (kind == "median") chain.push_back(median_smoothing(value));
    else throw invalid_argument(flag + ": unknown squeezer '" + item + "' (known: bits:N, median:K, joined by +)");
  }
  if (chain.empty()) throw invalid_argument(flag + " is empty");
  return [chain](const torch::Tensor& x) {
    torch::Tensor out = x;
    for (const auto& f : chain) out = f(out);
    return out;
  };
}

}  // namespace bulwark::attack
