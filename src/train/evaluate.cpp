#include "train/evaluate.h"

#include <chrono>

#include "core/error.h"

namespace bulwark::train {

double accuracy_of(const torch::Tensor& logits, const torch::Tensor& y) {
  if (y.numel() == 0) return 0.0;
  return logits.argmax(1).eq(y).sum().item<double>() / static_cast<double>(y.numel());
}

EvalResult evaluate(const model::Model& m, const data::Dataset& d, int64_t batch_size) {
  const auto t0 = std::chrono::steady_clock::now();
  const int64_t k = m.spec().num_classes();
  if (d.size() > 0) m.check_input(d.images.narrow(0, 0, 1));
  EvalResult r;
  r.n = d.size();
  r.confusion.assign(static_cast<size_t>(k), std::vector<int64_t>(static_cast<size_t>(k), 0));
  torch::NoGradGuard no_grad;  // not InferenceMode: a TorchScript module run under it cannot train afterwards
  model::EvalMode eval(m);
  for (int64_t start = 0; start < d.size(); start += batch_size) {
    const auto idx = torch::arange(start, std::min(start + batch_size, d.size()));
    const auto pred = m.logits(d.inputs(idx)).argmax(1);
    const auto y = d.targets(idx);
    const auto* p = pred.data_ptr<int64_t>();
    const auto* t = y.data_ptr<int64_t>();
    for (int64_t i = 0; i < y.numel(); ++i) {
      if (t[i] >= k || p[i] >= k) throw invalid_argument("dataset label out of the model's class range");
      ++r.confusion[static_cast<size_t>(t[i])][static_cast<size_t>(p[i])];
      r.predictions.push_back(p[i]);
    }
  }
  for (int64_t c = 0; c < k; ++c) {
    int64_t total = 0;
    for (int64_t v : r.confusion[static_cast<size_t>(c)]) total += v;
    const int64_t hit = r.confusion[static_cast<size_t>(c)][static_cast<size_t>(c)];
    r.correct += hit;
    r.per_class_count.push_back(total);
    r.per_class_accuracy.push_back(total ? static_cast<double>(hit) / static_cast<double>(total) : 0.0);
  }
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

nlohmann::json EvalResult::to_json(const std::vector<std::string>& class_names) const {
  nlohmann::json per_class = nlohmann::json::array();
  for (size_t c = 0; c < per_class_accuracy.size(); ++c) {
    per_class.push_back({{"class", c < class_names.size() ? class_names[c] : std::to_string(c)},
                         {"accuracy", per_class_accuracy[c]},
                         {"count", per_class_count[c]}});
  }
  return {{"n", n}, {"correct", correct}, {"accuracy", accuracy()}, {"per_class", per_class},
          {"confusion", confusion}, {"seconds", seconds}};
}

}  // namespace bulwark::train
