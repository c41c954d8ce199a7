// poison/scan.h — `bulwark poison scan`: is there a backdoor in this training set? Per class (as
// labelled), the penultimate features of a model trained on the set are split in two, by spectral
// signatures (Tran et al. 2018: the projection on the top singular vector of the centred features,
// split by exact 2-means) and by activation clustering (Chen et al. 2018: PCA to a few dimensions,
// k-means with k = 2, the silhouette). A class is flagged when its split is well separated; which
// half is the poison is not "the smaller" (an all-to-one attack can make the poison half of its
// target class) but the half whose images look like other classes: the labels of their nearest
// neighbours in pixel space (poison/neighbours.h). docs/poisoning.md has the measurements.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/types.h>

#include "data/dataset.h"
#include "model/model.h"

namespace bulwark::poison {

enum class ScanMethod { kSpectral, kClustering, kBoth };
// "spectral", "clustering", "both"; anything else throws invalid_argument naming --method.
ScanMethod parse_scan_method(const std::string& name);
std::string to_string(ScanMethod m);

// ScanOptions().method(ScanMethod::kBoth).seed(1). Setters validate and throw invalid_argument
// naming the CLI flag; the defaults are the thresholds docs/poisoning.md measured.
class ScanOptions {
 public:
  ScanOptions& method(ScanMethod v);
  // Spectral separation (2-means on the projection: distance of the means over the pooled sd) at
  // or above which a class is split (--spectral-threshold). One Gaussian bump gives ~2.65.
  ScanOptions& spectral_threshold(double v);
  // Activation clustering: the silhouette at or above which a class is split (--silhouette-threshold).
  ScanOptions& silhouette_threshold(double v);
  // Centre the features before the spectral projection, as Tran et al. do (off: the raw features).
  ScanOptions& spectral_centred(bool v);
  ScanOptions& pca_dims(int64_t v);          // activation clustering's projection (--pca-dims)
  ScanOptions& restarts(int64_t v);          // k-means restarts
  ScanOptions& neighbours(int64_t v);        // k of the pixel-space neighbours (--neighbours)
  ScanOptions& reference_rows(int64_t v);    // rows the neighbours are drawn from (--reference-rows)
  ScanOptions& orientation_sample(int64_t v);  // images per half whose neighbours are looked up
  // How much more of the suspect half's neighbours must carry other labels than the other half's.
  ScanOptions& orientation_margin(double v);
  // Whiten each class's features by the pooled within-class covariance of the other classes before
  // either method splits them (off: the raw features, as both papers do).
  ScanOptions& whiten(bool v);
  // Singular directions whose 2-means split is tried, best separated kept (Tran et al.: 1).
  ScanOptions& spectral_directions(int64_t v);
  ScanOptions& shrinkage(double v);  // whitening: added variance, as a fraction of the mean (--shrinkage)
  // Look the neighbours up in every class, split or not (the statistics for calibration; slower).
  ScanOptions& orient_every_class(bool v);
  ScanOptions& seed(uint64_t v);
  ScanOptions& progress(bool v);

  ScanMethod method() const { return method_; }
  double spectral_threshold() const { return spectral_threshold_; }
  double silhouette_threshold() const { return silhouette_threshold_; }
  bool spectral_centred() const { return spectral_centred_; }
  int64_t pca_dims() const { return pca_dims_; }
  int64_t restarts() const { return restarts_; }
  int64_t neighbours() const { return neighbours_; }
  int64_t reference_rows() const { return reference_rows_; }
  int64_t orientation_sample() const { return orientation_sample_; }
  double orientation_margin() const { return orientation_margin_; }
  bool orient_every_class() const { return orient_every_class_; }
  bool whiten() const { return whiten_; }
  int64_t spectral_directions() const { return spectral_directions_; }
  double shrinkage() const { return shrinkage_; }
  uint64_t seed() const { return seed_; }
  bool progress() const { return progress_; }
  bool uses_spectral() const { return method_ != ScanMethod::kClustering; }
  bool uses_clustering() const { return method_ != ScanMethod::kSpectral; }
  nlohmann::json to_json() const;

 private:
  ScanMethod method_ = ScanMethod::kBoth;
  double spectral_threshold_ = 6.5;
  double silhouette_threshold_ = 0.38;
  bool spectral_centred_ = true;
  int64_t pca_dims_ = 10;
  int64_t restarts_ = 4;
  int64_t neighbours_ = 10;
  int64_t reference_rows_ = 5000;
  int64_t orientation_sample_ = 100;
  double orientation_margin_ = 0.1;
  bool orient_every_class_ = false;
  bool whiten_ = true;
  int64_t spectral_directions_ = 4;
  double shrinkage_ = 0.05;
  uint64_t seed_ = 0;
  bool progress_ = true;
};

// One method's split of one class.
struct Split {
  double statistic = 0;       // spectral: separation; clustering: silhouette
  bool separated = false;     // statistic at or above its threshold
  int64_t suspect_size = 0;   // the half the orientation points at (before a verdict)
  int64_t other_size = 0;
  // Mean fraction of each half's pixel-space neighbours that carry another label; NaN when not
  // looked up (a class not separated, without orient_every_class).
  double suspect_other_labels = 0, other_other_labels = 0;
  bool flagged = false;       // separated, and the suspect half looks like other classes
  nlohmann::json to_json() const;
};

struct ClassScan {
  int64_t label = 0;
  std::string name;
  int64_t rows = 0;
  std::optional<Split> spectral, clustering;
  bool flagged = false;
};

struct Suspect {
  int64_t row = 0;    // in the dataset's order
  int64_t label = 0;  // as labelled (the class it was flagged in)
  double score = 0;   // spectral: squared projection (Tran et al.); clustering: distance margin to the centres
  std::string method;
};

struct ScanResult {
  ScanOptions options;
  int64_t rows = 0;
  std::vector<ClassScan> classes;
  std::vector<Suspect> suspects;  // every method's; a row flagged by both appears once per method
  std::vector<int64_t> suspected_rows;  // the verdict: sorted, unique (see scan())
  int64_t flagged_classes = 0;
  bool failed = false;
  double seconds = 0;
  // The rows one method flagged, sorted.
  std::vector<int64_t> rows_of(const std::string& method) const;
  nlohmann::json to_json(const std::vector<std::string>& class_names) const;
};

// Scans `d` (uint8 images of the model's shape, labels below its class count) with the
// penultimate features of `m`, a model trained on it. With both methods, a class is flagged when
// either method flags it and the suspected rows are the union. Throws invalid_argument when the
// model has no features() or the data does not fit it.
ScanResult scan(const model::Model& m, const data::Dataset& d, const ScanOptions& o);

// Throws invalid_argument naming --model when m has no features() to scan.
void require_features(const model::Model& m);

// Penultimate features of every row of `d`, in eval mode, as double [N, F].
torch::Tensor features_of(const model::Model& m, const data::Dataset& d, int64_t batch_size = 500);

}  // namespace bulwark::poison
