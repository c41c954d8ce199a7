// detect/calibration.h — a set of detectors calibrated on clean held-out data for one model
// (identified by its SHA-256), and their combined score.
//
// Calibration splits clean held-out points in two: on part A each detector's scores become its
// reference distribution (p-value of a score = share of clean scores at least as high); on part B
// the combined score, 1 - min over detectors of the p-value, gets its threshold at the target FPR.
// Part B's raw scores are stored too, so any subset of the detectors (`serve --detectors`) gets a
// combined threshold of its own without re-running the model.
//
// Past the reference's top 5 % the p-value follows an exponential tail fitted to those scores
// (peaks over threshold): an empirical p-value cannot go below 1/(n+1), so every score beyond the
// clean maximum would tie at the floor, and the combined score could not tell an input far outside
// the clean range from a borderline one.
//
// Thread-safety: immutable after construction; score() may be called from any thread.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/types.h>

#include "core/cancel.h"
#include "detect/detector.h"

namespace bulwark::detect {

constexpr const char* kCalibrationFormat = "bulwark-detect/1";

struct CalibrationOptions {
  // The cheap ones by default (squeeze costs one forward pass per squeezer on every request).
  // Mahalanobis adds little over pca at L-inf 0.1 (BENCHMARKS.md) and costs more: opt-in.
  std::vector<std::string> detectors{"max-softmax", "pca"};
  std::vector<std::string> squeezers{"bits:4", "median:2"};
  double fpr = 0.01;  // target false-positive rate on clean inputs, per detector and combined
  CancelFlag cancel;  // set: calibration throws Cancelled at the next chunk (the closed loop's stop)

  void validate() const;  // throws invalid_argument naming the flag
};

struct Scores {
  torch::Tensor raw;       // [N, D] per detector
  torch::Tensor combined;  // [N] in [0, 1] (double): 1 - min p-value (calibrated), or the raw score (uncalibrated)
  torch::Tensor flagged;   // [N] bool: combined above the threshold
};

class DetectorSet {
 public:
  // Fits what needs fitting (Mahalanobis) on (x_fit, y_fit) and calibrates on x_ref (clean).
  static DetectorSet calibrate(const model::Model& m, const std::string& model_sha256, const CalibrationOptions& o,
                               const torch::Tensor& x_fit, const torch::Tensor& y_fit, const torch::Tensor& x_ref);
  // Reads a calibration file; refuses one made for another model (SHA-256 mismatch) and names both.
  static DetectorSet load(const std::string& path, const model::Model& m, const std::string& model_sha256);
  // The same from the file's text (a registry object read once and verified); `origin` names it in errors.
  static DetectorSet parse(const std::string& text, const std::string& origin, const model::Model& m,
                           const std::string& model_sha256);
  // One detector with a fixed raw threshold, no calibration (serve's confidence fallback).
  static DetectorSet uncalibrated(std::shared_ptr<Detector> d, double threshold);

  // Writes the calibration file atomically.
  void save(const std::string& path) const;
  nlohmann::json to_json() const;
  // The same calibration restricted to `names` (in the set), combined threshold recomputed.
  DetectorSet select(const std::vector<std::string>& names) const;

  // Runs the detectors: x [N, C, H, W], logits [N, K], features when needs_features().
  Scores score(const model::Model& m, const Batch& b) const;
  // The combined score and flag of raw scores [N, D] (what score() returns after the detectors ran).
  Scores from_raw(const torch::Tensor& raw) const;
  // p-values [N, D] of raw scores [N, D] under the clean reference (calibrated sets only).
  torch::Tensor p_values(const torch::Tensor& raw) const;

  bool calibrated() const { return calibrated_; }
  bool needs_features() const;
  std::vector<std::string> names() const;
  const std::vector<std::shared_ptr<Detector>>& detectors() const { return detectors_; }
  // Per-detector raw thresholds at the target FPR (part A quantile), and the combined one.
  const std::vector<double>& thresholds() const { return thresholds_; }
  double combined_threshold() const { return combined_threshold_; }
  double fpr() const { return fpr_; }
  const std::string& model_sha256() const { return model_sha256_; }
  // Clean reference statistics for the stream monitor (kept opaque here; the monitor reads it).
  nlohmann::json& monitor_reference() { return monitor_reference_; }
  const nlohmann::json& monitor_reference() const { return monitor_reference_; }

 private:
  void recompute_combined_threshold();

  std::vector<std::shared_ptr<Detector>> detectors_;
  void fit_tails();

  std::vector<torch::Tensor> reference_;  // per detector: sorted clean scores of part A
  std::vector<std::vector<float>> sorted_;       // the same, as plain arrays: p-values run per request
  std::vector<double> tail_start_, tail_scale_;  // per detector: the exponential tail (from reference_)
  torch::Tensor holdout_;                 // [nB, D] raw clean scores of part B
  std::vector<double> thresholds_;
  double combined_threshold_ = 0.5;
  double fpr_ = 0.01;
  bool calibrated_ = false;
  std::string model_sha256_;
  nlohmann::json monitor_reference_ = nlohmann::json::object();
};

// The (1 - fpr) quantile of v: at most a share fpr of v lies strictly above it. Thresholds here
// and in detect evaluate's ROC readings.
double upper_quantile(const torch::Tensor& v, double fpr);

// Raw detector scores [N, D] for a large x, computed in chunks under NoGrad; `cancel` is read
// before each chunk.
torch::Tensor score_all(const DetectorSet& set, const model::Model& m, const torch::Tensor& x, int64_t chunk = 500,
                        const CancelFlag& cancel = nullptr);

}  // namespace bulwark::detect
