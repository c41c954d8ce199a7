#include "detect/monitor_fit.h"

#include <torch/torch.h>

#include "detect/monitor.h"
#include "model/model.h"

namespace bulwark::detect {

nlohmann::json fit_monitor_reference(const DetectorSet& set, const model::Model& m, const torch::Tensor& x,
                                     const torch::Tensor& y, const CancelFlag& cancel) {
  torch::NoGradGuard ng;
  std::vector<float> conf;
  std::vector<bool> hits, correct;
  std::vector<int64_t> pred;
  for (int64_t s = 0; s < x.size(0); s += 500) {
    throw_if_cancelled(cancel, "the monitor's reference");
    const auto xc = x.narrow(0, s, std::min<int64_t>(500, x.size(0) - s));
    Batch b;
    b.x = xc;
    if (set.needs_features()) std::tie(b.logits, b.features) = m.logits_and_features(xc);
    else b.logits = m.logits(xc);
    const auto flagged = set.score(m, b).flagged.contiguous();
    const auto top = torch::softmax(b.logits, 1).max(1);
    const auto c = std::get<0>(top).contiguous();
    const auto k = std::get<1>(top).contiguous();
    const auto yc = y.narrow(0, s, xc.size(0)).contiguous();
    for (int64_t i = 0; i < xc.size(0); ++i) {
      conf.push_back(c[i].item<float>());
      pred.push_back(k[i].item<int64_t>());
      hits.push_back(flagged[i].item<bool>());
      correct.push_back(pred.back() == yc[i].item<int64_t>());
    }
  }
  auto ref = MonitorReference::fit(conf, hits, pred, m.spec().num_classes(), correct);
  // The hit rate measured here is in-sample for the calibration; the target FPR is the rate the
  // thresholds promise on new clean data. Take the larger: underestimating p0 raises false alarms.
  ref.detector_rate = std::max(ref.detector_rate, set.calibrated() ? set.fpr() : 0.0);
  return ref.to_json();
}

}  // namespace bulwark::detect
