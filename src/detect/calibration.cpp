#include "detect/calibration.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "core/files.h"
#include "model/model.h"

namespace bulwark::detect {
double upper_quantile(const torch::Tensor& v, double fpr) {
  const auto s = std::get<0>(v.to(torch::kDouble).sort());
  const int64_t n = s.numel();
  const int64_t k = std::clamp<int64_t>(static_cast<int64_t>(std::ceil((1.0 - fpr) * n)) - 1, 0, n - 1);
  return s[k].item<double>();
}

namespace {

Batch run_model(const model::Model& m, const torch::Tensor& x, bool features) {
  Batch b;
  b.x = x;
  if (features) std::tie(b.logits, b.features) = m.logits_and_features(x);
  else b.logits = m.logits(x);
  return b;
}

}  // namespace

void CalibrationOptions::validate() const {
  if (detectors.empty()) throw invalid_argument("--detectors is empty");
  if (!(fpr > 0 && fpr < 0.5)) throw invalid_argument("--fpr must be in (0, 0.5), got " + std::to_string(fpr));
}

torch::Tensor score_all(const DetectorSet& set, const model::Model& m, const torch::Tensor& x, int64_t chunk,
                        const CancelFlag& cancel) {
  torch::NoGradGuard ng;
  std::vector<torch::Tensor> parts;
  for (int64_t s = 0; s < x.size(0); s += chunk) {
    throw_if_cancelled(cancel, "detector calibration");
    const auto b = run_model(m, x.narrow(0, s, std::min(chunk, x.size(0) - s)), set.needs_features());
    std::vector<torch::Tensor> cols;
    for (const auto& d : set.detectors()) cols.push_back(d->score(m, b).to(torch::kFloat));
    parts.push_back(torch::stack(cols, 1));
  }
  return parts.empty() ? torch::empty({0, static_cast<int64_t>(set.detectors().size())}) : torch::cat(parts);
}

DetectorSet DetectorSet::calibrate(const model::Model& m, const std::string& model_sha256, const CalibrationOptions& o,
                                   const torch::Tensor& x_fit, const torch::Tensor& y_fit, const torch::Tensor& x_ref) {
  o.validate();
  if (x_ref.size(0) < 200) {
    throw invalid_argument("calibration needs >= 200 clean held-out points, got " + std::to_string(x_ref.size(0)));
  }
  torch::NoGradGuard ng;
  DetectorSet set;
  set.model_sha256_ = model_sha256;
  set.fpr_ = o.fpr;
  set.calibrated_ = true;
  const auto& spec = m.spec();
  for (const auto& name : o.detectors) {
    if (name == "mahalanobis") {
      if (!m.has_features()) throw invalid_argument("--detectors: mahalanobis needs a model with features()");
      std::vector<torch::Tensor> feats;
      for (int64_t s = 0; s < x_fit.size(0); s += 500) {
        throw_if_cancelled(o.cancel, "detector calibration");
        feats.push_back(m.features(x_fit.narrow(0, s, std::min<int64_t>(500, x_fit.size(0) - s))).flatten(1));
      }
      set.detectors_.push_back(Mahalanobis::fit(torch::cat(feats), y_fit, spec.num_classes()));
    } else if (name == "pca") {
      set.detectors_.push_back(PcaWhitened::fit(x_fit));
    } else {
      set.detectors_.push_back(make_detector(name, spec.lo, spec.hi, o.squeezers));
    }
  }
  const int64_t half = x_ref.size(0) / 2;
  const auto ref_a = score_all(set, m, x_ref.narrow(0, 0, half), 500, o.cancel);
  set.holdout_ = score_all(set, m, x_ref.narrow(0, half, x_ref.size(0) - half), 500, o.cancel);
  for (int64_t d = 0; d < ref_a.size(1); ++d) {
    set.reference_.push_back(std::get<0>(ref_a.select(1, d).contiguous().sort()));
    set.thresholds_.push_back(upper_quantile(ref_a.select(1, d), o.fpr));
  }
  set.fit_tails();
  set.recompute_combined_threshold();
  return set;
}

DetectorSet DetectorSet::uncalibrated(std::shared_ptr<Detector> d, double threshold) {
  DetectorSet set;
  set.detectors_.push_back(std::move(d));
  set.thresholds_.push_back(threshold);
  set.combined_threshold_ = threshold;
  return set;
}

constexpr double kTailFraction = 0.05;

void DetectorSet::fit_tails() {
  tail_start_.clear();
  tail_scale_.clear();
  sorted_.clear();
  for (const auto& ref : reference_) {
    const auto c = ref.contiguous().to(torch::kFloat);
    sorted_.emplace_back(c.data_ptr<float>(), c.data_ptr<float>() + c.numel());
    const auto r = ref.to(torch::kDouble);
    const int64_t n = r.numel();
    const int64_t k = std::clamp<int64_t>(static_cast<int64_t>(std::ceil((1 - kTailFraction) * n)) - 1, 0, n - 1);
    const double start = r[k].item<double>();
    const auto excess = r.narrow(0, k, n - k) - start;
    // Mean excess is the exponential's scale; floored so a flat reference still orders scores.
    const double scale = std::max(excess.mean().item<double>(), 1e-12 * std::max(1.0, std::abs(start)));
    tail_start_.push_back(start);
    tail_scale_.push_back(scale);
  }
}

void DetectorSet::recompute_combined_threshold() {
  const auto c = 1.0 - p_values(holdout_).amin(1);
  combined_threshold_ = upper_quantile(c, fpr_);
}

torch::Tensor DetectorSet::p_values(const torch::Tensor& raw) const {
  if (!calibrated_) throw internal_error("p-values need a calibrated detector set");
  // Plain loops, not tensor ops: on the server's batch thread N is small and a dozen ATen calls
  // per detector cost more than the arithmetic (bench/serve measured 180 us at batch 1).
  const auto r = raw.detach().contiguous().to(torch::kDouble);
  const int64_t n = r.size(0), d = r.size(1);
  auto out = torch::empty({n, d}, torch::kDouble);
  const double* in = r.data_ptr<double>();
  double* p = out.data_ptr<double>();
  for (int64_t j = 0; j < d; ++j) {
    const auto& ref = sorted_[static_cast<size_t>(j)];
    const double m = static_cast<double>(ref.size());
    for (int64_t i = 0; i < n; ++i) {
      const double s = in[i * d + j];
      // Count of reference scores >= s, with the +1 that makes p a valid conformal p-value.
      const auto at_least = ref.end() - std::lower_bound(ref.begin(), ref.end(), static_cast<float>(s));
      double v = (static_cast<double>(at_least) + 1) / (m + 1);
      if (s > tail_start_[j]) v = std::min(v, kTailFraction * std::exp(-(s - tail_start_[j]) / tail_scale_[j]));
      p[i * d + j] = v;
    }
  }
  return out;
}

Scores DetectorSet::score(const model::Model& m, const Batch& b) const {
  std::vector<torch::Tensor> cols;
  for (const auto& d : detectors_) cols.push_back(d->score(m, b).to(torch::kFloat));
  return from_raw(torch::stack(cols, 1));
}

Scores DetectorSet::from_raw(const torch::Tensor& raw) const {
  Scores s;
  s.raw = raw;
  if (raw.size(0) == 0) {
    s.combined = torch::empty({0}, torch::kDouble);
    s.flagged = torch::empty({0}, torch::kBool);
    return s;
  }
  s.combined = calibrated_ ? 1.0 - p_values(raw).amin(1) : raw.select(1, 0).clamp(0.0, 1.0).to(torch::kDouble);
  s.flagged = s.combined > combined_threshold_;
  return s;
}

bool DetectorSet::needs_features() const {
  return std::any_of(detectors_.begin(), detectors_.end(), [](const auto& d) { return d->needs_features(); });
}

std::vector<std::string> DetectorSet::names() const {
  std::vector<std::string> out;
  for (const auto& d : detectors_) out.push_back(d->name());
  return out;
}

DetectorSet DetectorSet::select(const std::vector<std::string>& names) const {
  if (!calibrated_) throw invalid_argument("--detectors: an uncalibrated set cannot be narrowed");
  DetectorSet out;
  out.fpr_ = fpr_;
  out.calibrated_ = true;
  out.model_sha256_ = model_sha256_;
  out.monitor_reference_ = monitor_reference_;
  std::vector<int64_t> cols;
  const auto have = this->names();
  for (const auto& n : names) {
    const auto it = std::find(have.begin(), have.end(), n);
    if (it == have.end()) throw invalid_argument("--detectors: '" + n + "' is not in the calibration file");
    const auto d = it - have.begin();
    cols.push_back(d);
    out.detectors_.push_back(detectors_[d]);
    out.reference_.push_back(reference_[d]);
    out.thresholds_.push_back(thresholds_[d]);
  }
  out.holdout_ = holdout_.index_select(1, torch::tensor(cols));
  out.fit_tails();
  out.recompute_combined_threshold();
  return out;
}

nlohmann::json DetectorSet::to_json() const {
  nlohmann::json dets = nlohmann::json::array();
  for (size_t d = 0; d < detectors_.size(); ++d) {
    auto j = detectors_[d]->to_json();
    j["threshold"] = thresholds_[d];
    const auto& r = reference_[d];
    j["reference"] = std::vector<float>(r.data_ptr<float>(), r.data_ptr<float>() + r.numel());
    const auto h = holdout_.select(1, static_cast<int64_t>(d)).contiguous();
    j["holdout"] = std::vector<float>(h.data_ptr<float>(), h.data_ptr<float>() + h.numel());
    dets.push_back(j);
  }
  return {{"format", kCalibrationFormat},
          {"model_sha256", model_sha256_},
          {"fpr", fpr_},
          {"combined_threshold", combined_threshold_},
          {"detectors", dets},
          {"monitor_reference", monitor_reference_}};
}

void DetectorSet::save(const std::string& path) const {
  if (!calibrated_) throw internal_error("only a calibrated set can be saved");
  atomic_write_file(path, to_json().dump() + "\n");
}

DetectorSet DetectorSet::load(const std::string& path, const model::Model& m, const std::string& model_sha256) {
  return parse(read_file(path), path, m, model_sha256);
}

DetectorSet DetectorSet::parse(const std::string& text, const std::string& path, const model::Model& m,
                               const std::string& model_sha256) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw data_format(path + ": not a calibration file (invalid JSON)");
  }
  if (!j.is_object() || j.value("format", "") != kCalibrationFormat) {
    throw data_format(path + ": not a calibration file (format is not " + std::string(kCalibrationFormat) + ")");
  }
  auto field = [&](const char* k) -> const nlohmann::json& {
    if (!j.contains(k)) throw data_format(path + ": '" + k + "' is missing");
    return j[k];
  };
  if (!field("model_sha256").is_string()) throw data_format(path + ": 'model_sha256' must be a string");
  const auto sha = j["model_sha256"].get<std::string>();
  if (sha != model_sha256) {
    throw invalid_argument(path + ": calibrated for another model (sha256 " + sha.substr(0, 12) +
                           "..., this model is " + model_sha256.substr(0, 12) + "...); run bulwark detect calibrate");
  }
  DetectorSet set;
  set.model_sha256_ = sha;
  set.calibrated_ = true;
  if (!field("fpr").is_number()) throw data_format(path + ": 'fpr' must be a number");
  set.fpr_ = j["fpr"].get<double>();
  if (!(set.fpr_ > 0 && set.fpr_ < 0.5)) throw data_format(path + ": 'fpr' must be in (0, 0.5)");
  if (!field("detectors").is_array() || j["detectors"].empty()) throw data_format(path + ": 'detectors' must be a list");
  std::vector<torch::Tensor> holdout;
  int64_t n_holdout = -1;
  for (size_t i = 0; i < j["detectors"].size(); ++i) {
    const auto& dj = j["detectors"][i];
    const std::string where = path + ": detectors[" + std::to_string(i) + "]";
    auto d = detector_from_json(dj, m.spec().lo, m.spec().hi, where);
    if (d->needs_features() && !m.has_features()) throw invalid_argument(where + ": the model has no features()");
    auto floats = [&](const char* k) {
      if (!dj.contains(k) || !dj[k].is_array() || dj[k].empty()) throw data_format(where + ": '" + k + "' missing");
      std::vector<float> v;
      for (const auto& x : dj[k]) {
        if (!x.is_number()) throw data_format(where + "." + k + ": expected numbers");
        v.push_back(x.get<float>());
      }
      return torch::tensor(v);
    };
    set.reference_.push_back(std::get<0>(floats("reference").sort()));
    auto h = floats("holdout");
    if (n_holdout >= 0 && h.numel() != n_holdout) throw data_format(where + ": 'holdout' length differs");
    n_holdout = h.numel();
    holdout.push_back(h);
    if (!dj.contains("threshold") || !dj["threshold"].is_number()) throw data_format(where + ": 'threshold' missing");
    set.thresholds_.push_back(dj["threshold"].get<double>());
    set.detectors_.push_back(std::move(d));
  }
  set.holdout_ = torch::stack(holdout, 1);
  set.monitor_reference_ = j.value("monitor_reference", nlohmann::json::object());
  set.fit_tails();
  set.recompute_combined_threshold();
  return set;
}

}  // namespace bulwark::detect
