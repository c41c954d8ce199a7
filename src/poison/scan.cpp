#include "poison/scan.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <iostream>
#include <limits>
#include <map>
#include <set>

#include <torch/torch.h>

#include "core/error.h"
#include "poison/cluster.h"
#include "poison/neighbours.h"

namespace bulwark::poison {
namespace {

using nlohmann::json;

constexpr int64_t kMinClassRows = 20;        // fewer: no split is meaningful
constexpr int64_t kSilhouetteSample = 2000;  // points whose silhouette is averaged (all distances each)

void check_range(bool ok, const std::string& flag, const std::string& range, const std::string& got) {
  if (!ok) throw invalid_argument(flag + " must be " + range + ", got " + got);
}

// Neighbour look-ups, memoised per row: both methods ask about the same images.
class Orientation {
 public:
  Orientation(const data::Dataset& d, const ScanOptions& o) : d_(d), o_(o) {
    const int64_t n = std::min(o.reference_rows(), d.size());
    reference_ = std::get<0>(data::seeded_permutation(d.size(), o.seed() * 7919 + 3).narrow(0, 0, n).sort());
  }
  // Mean other-label fraction over a seeded sample of `rows`.
  double of(const torch::Tensor& rows, uint64_t seed) {
    if (rows.size(0) == 0) return std::numeric_limits<double>::quiet_NaN();
    torch::Tensor picked = rows;
    if (rows.size(0) > o_.orientation_sample()) {
      picked = rows.index_select(0, data::seeded_permutation(rows.size(0), seed).narrow(0, 0, o_.orientation_sample()));
    }
    std::vector<int64_t> missing;
    const auto ids = picked.contiguous();
    for (int64_t i = 0; i < ids.size(0); ++i) {
      const int64_t r = ids[i].item<int64_t>();
      if (!memo_.count(r)) missing.push_back(r);
    }
    if (!missing.empty()) {
      const torch::Tensor q = torch::tensor(missing, torch::kInt64);
      const torch::Tensor f = other_label_fraction(d_, q, reference_, o_.neighbours());
      for (size_t i = 0; i < missing.size(); ++i) memo_[missing[i]] = f[static_cast<int64_t>(i)].item<double>();
    }
    double sum = 0;
    for (int64_t i = 0; i < ids.size(0); ++i) sum += memo_.at(ids[i].item<int64_t>());
    return sum / static_cast<double>(ids.size(0));
  }

 private:
  const data::Dataset& d_;
  const ScanOptions& o_;
  torch::Tensor reference_;
  std::map<int64_t, double> memo_;
};

// The within-class covariance of every other class, pooled (each centred on its own mean), as a
// whitening matrix for class c: the directions clean images vary along anyway shrink, and a
// direction only one class's images spread along (a trigger's units fire in the target class
// alone) grows. `shrinkage` (a fraction of the mean variance, added to every direction) bounds the
// growth of directions no other class uses.
class Whitener {
 public:
  Whitener(const torch::Tensor& features, const torch::Tensor& labels, int64_t classes, double shrinkage)
      : shrinkage_(shrinkage) {
    const int64_t d = features.size(1);
    total_ = torch::zeros({d, d}, torch::kFloat64);
    for (int64_t c = 0; c < classes; ++c) {
      const torch::Tensor f = features.index({labels.eq(c)});
      torch::Tensor s = torch::zeros({d, d}, torch::kFloat64);
      if (f.size(0) > 1) {
        const torch::Tensor centred = f - f.mean(0, true);
        s = centred.t().matmul(centred);
      }
      scatter_.push_back(s);
      counts_.push_back(f.size(0));
      total_ += s;
      n_ += f.size(0);
    }
  }
  // [d, d]: multiply centred features on the right.
  torch::Tensor matrix(int64_t c) const {
    const int64_t others = n_ - counts_[static_cast<size_t>(c)];
    const int64_t d = total_.size(0);
    torch::Tensor cov = (total_ - scatter_[static_cast<size_t>(c)]) / static_cast<double>(std::max<int64_t>(others, 1));
    const double mean_variance = cov.trace().item<double>() / static_cast<double>(d);
    cov = cov + std::max(shrinkage_ * mean_variance, 1e-12) * torch::eye(d, torch::kFloat64);
    const auto [values, vectors] = torch::linalg_eigh(cov);
    return vectors.matmul(torch::diag(values.clamp_min(1e-12).rsqrt())).matmul(vectors.t());
  }

 private:
  double shrinkage_;
  torch::Tensor total_;
  std::vector<torch::Tensor> scatter_;
  std::vector<int64_t> counts_;
  int64_t n_ = 0;
};

// Orients a split (`high`: bool over the class's rows) and gives the verdict.
Split orient(const torch::Tensor& rows, const torch::Tensor& high, double statistic, bool separated,
             Orientation& orientation, const ScanOptions& o, uint64_t seed, bool* suspect_is_high) {
  Split s;
  s.statistic = statistic;
  s.separated = separated;
  const torch::Tensor hi_rows = rows.index({high}), lo_rows = rows.index({high.logical_not()});
  const bool look = separated || o.orient_every_class();
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double hi = look ? orientation.of(hi_rows, seed) : nan;
  const double lo = look ? orientation.of(lo_rows, seed + 1) : nan;
  // Without a look-up the smaller half is reported as the suspect, for the sizes only.
  *suspect_is_high = look ? !(lo > hi) : hi_rows.size(0) <= lo_rows.size(0);
  s.suspect_size = *suspect_is_high ? hi_rows.size(0) : lo_rows.size(0);
  s.other_size = *suspect_is_high ? lo_rows.size(0) : hi_rows.size(0);
  s.suspect_other_labels = *suspect_is_high ? hi : lo;
  s.other_other_labels = *suspect_is_high ? lo : hi;
  s.flagged = separated && s.suspect_size > 0 && s.other_size > 0 &&
              s.suspect_other_labels - s.other_other_labels >= o.orientation_margin();
  return s;
}

void spectral(const torch::Tensor& rows, const torch::Tensor& f, ClassScan& c, std::vector<Suspect>& out,
              Orientation& orientation, const ScanOptions& o) {
  const torch::Tensor basis = o.spectral_centred() ? f - f.mean(0, true) : f;
  // Tran et al. read the top singular vector only; at low rates the poison's direction can come
  // second or third even after whitening, so the best separated of the top few is kept.
  const torch::Tensor vh = std::get<2>(torch::linalg_svd(basis, /*full_matrices=*/false));
  torch::Tensor projection;
  Split1d split;
  split.separation = -1;
  for (int64_t k = 0; k < std::min(o.spectral_directions(), vh.size(0)); ++k) {
    const torch::Tensor p = basis.matmul(vh[k]);
    Split1d candidate = two_means_1d(p);
    if (candidate.separation > split.separation) {
      split = std::move(candidate);
      projection = p;
    }
  }
  bool suspect_is_high = true;
  c.spectral = orient(rows, split.high, split.separation, split.separation >= o.spectral_threshold(), orientation, o,
                      o.seed() * 31 + static_cast<uint64_t>(c.label) * 2, &suspect_is_high);
  if (!c.spectral->flagged) return;
  // The cut along one direction leaves the poison's edge on the clean side; a few steps of the
  // two-Gaussian (shared covariance) fit from this split move the members along the discriminant.
  torch::Tensor high = split.high;
  for (int step = 0; step < 5; ++step) {
    const torch::Tensor a = basis.index({high}), b = basis.index({high.logical_not()});
    if (a.size(0) < 2 || b.size(0) < 2) break;
    const torch::Tensor ca = a - a.mean(0, true), cb = b - b.mean(0, true);
    torch::Tensor within = (ca.t().matmul(ca) + cb.t().matmul(cb)) / static_cast<double>(basis.size(0));
    within += 1e-3 * (within.trace().item<double>() / static_cast<double>(within.size(0)) + 1e-12) *
              torch::eye(within.size(0), torch::kFloat64);
    const torch::Tensor w = torch::linalg_solve(within, (a.mean(0) - b.mean(0)).unsqueeze(1)).squeeze(1);
    const torch::Tensor next = two_means_1d(basis.matmul(w)).high;
    if (next.equal(high)) break;
    high = next;
  }
  // The discriminant's sign follows the old high half; keep the orientation with the suspects.
  const torch::Tensor suspect = suspect_is_high ? high : high.logical_not();
  const torch::Tensor ids = rows.index({suspect}), score = projection.index({suspect}).pow(2);
  for (int64_t i = 0; i < ids.size(0); ++i) {
    out.push_back({ids[i].item<int64_t>(), c.label, score[i].item<double>(), "spectral"});
  }
}

void clustering(const torch::Tensor& rows, const torch::Tensor& f, ClassScan& c, std::vector<Suspect>& out,
                Orientation& orientation, const ScanOptions& o) {
  const uint64_t seed = o.seed() * 131 + static_cast<uint64_t>(c.label);
  const torch::Tensor z = pca_project(f, o.pca_dims());
  const KMeans2 km = kmeans2(z, o.restarts(), seed);
  const double sil = silhouette(z, km.assignment, kSilhouetteSample, seed);
  const torch::Tensor high = km.assignment.eq(1);
  bool suspect_is_high = true;
  c.clustering = orient(rows, high, sil, sil >= o.silhouette_threshold(), orientation, o,
                        o.seed() * 37 + static_cast<uint64_t>(c.label) * 2, &suspect_is_high);
  if (!c.clustering->flagged) return;
  const int64_t s = suspect_is_high ? 1 : 0;
  const torch::Tensor suspect = km.assignment.eq(s);
  const torch::Tensor zs = z.index({suspect});
  // How much nearer the suspect centre than the other one: deeper inside the poison, higher.
  const torch::Tensor score = (zs - km.centres[1 - s]).norm(2, 1) - (zs - km.centres[s]).norm(2, 1);
  const torch::Tensor ids = rows.index({suspect});
  for (int64_t i = 0; i < ids.size(0); ++i) {
    out.push_back({ids[i].item<int64_t>(), c.label, score[i].item<double>(), "clustering"});
  }
}

}  // namespace

ScanMethod parse_scan_method(const std::string& name) {
  if (name == "spectral") return ScanMethod::kSpectral;
  if (name == "clustering") return ScanMethod::kClustering;
  if (name == "both") return ScanMethod::kBoth;
  throw invalid_argument("--method must be spectral, clustering or both, got '" + name + "'");
}

std::string to_string(ScanMethod m) {
  return m == ScanMethod::kSpectral ? "spectral" : m == ScanMethod::kClustering ? "clustering" : "both";
}

ScanOptions& ScanOptions::method(ScanMethod v) {
  method_ = v;
  return *this;
}
ScanOptions& ScanOptions::spectral_threshold(double v) {
  check_range(v > 0 && std::isfinite(v), "--spectral-threshold", "a positive number", std::to_string(v));
  spectral_threshold_ = v;
  return *this;
}
ScanOptions& ScanOptions::silhouette_threshold(double v) {
  check_range(v > 0 && v < 1, "--silhouette-threshold", "in (0, 1)", std::to_string(v));
  silhouette_threshold_ = v;
  return *this;
}
ScanOptions& ScanOptions::spectral_centred(bool v) {
  spectral_centred_ = v;
  return *this;
}
ScanOptions& ScanOptions::pca_dims(int64_t v) {
  check_range(v >= 1 && v <= 512, "--pca-dims", "in [1, 512]", std::to_string(v));
  pca_dims_ = v;
  return *this;
}
ScanOptions& ScanOptions::restarts(int64_t v) {
  check_range(v >= 1 && v <= 100, "--restarts", "in [1, 100]", std::to_string(v));
  restarts_ = v;
  return *this;
}
ScanOptions& ScanOptions::neighbours(int64_t v) {
  check_range(v >= 1 && v <= 100, "--neighbours", "in [1, 100]", std::to_string(v));
  neighbours_ = v;
  return *this;
}
ScanOptions& ScanOptions::reference_rows(int64_t v) {
  check_range(v >= 100 && v <= 1000000, "--reference-rows", "in [100, 1000000]", std::to_string(v));
  reference_rows_ = v;
  return *this;
}
ScanOptions& ScanOptions::orientation_sample(int64_t v) {
  check_range(v >= 10 && v <= 100000, "--orientation-sample", "in [10, 100000]", std::to_string(v));
  orientation_sample_ = v;
  return *this;
}
ScanOptions& ScanOptions::orientation_margin(double v) {
  check_range(v >= 0 && v < 1, "--orientation-margin", "in [0, 1)", std::to_string(v));
  orientation_margin_ = v;
  return *this;
}
ScanOptions& ScanOptions::spectral_directions(int64_t v) {
  check_range(v >= 1 && v <= 64, "--spectral-directions", "in [1, 64]", std::to_string(v));
  spectral_directions_ = v;
  return *this;
}
ScanOptions& ScanOptions::whiten(bool v) {
  whiten_ = v;
  return *this;
}
ScanOptions& ScanOptions::shrinkage(double v) {
  check_range(v > 0 && v <= 10, "--shrinkage", "in (0, 10]", std::to_string(v));
  shrinkage_ = v;
  return *this;
}
ScanOptions& ScanOptions::orient_every_class(bool v) {
  orient_every_class_ = v;
  return *this;
}
ScanOptions& ScanOptions::seed(uint64_t v) {
  seed_ = v;
  return *this;
}
ScanOptions& ScanOptions::progress(bool v) {
  progress_ = v;
  return *this;
}

json ScanOptions::to_json() const {
  return {{"method", to_string(method_)},
          {"spectral_threshold", spectral_threshold_},
          {"spectral_centred", spectral_centred_},
          {"spectral_directions", spectral_directions_},
          {"whiten", whiten_},
          {"shrinkage", shrinkage_},
          {"silhouette_threshold", silhouette_threshold_},
          {"pca_dims", pca_dims_},
          {"restarts", restarts_},
          {"neighbours", neighbours_},
          {"reference_rows", reference_rows_},
          {"orientation_sample", orientation_sample_},
          {"orientation_margin", orientation_margin_},
          {"seed", seed_}};
}

torch::Tensor features_of(const model::Model& m, const data::Dataset& d, int64_t batch_size) {
  torch::NoGradGuard no_grad;  // not InferenceMode: the same module may be trained afterwards
  model::EvalMode eval(m);
  std::vector<torch::Tensor> out;
  for (int64_t at = 0; at < d.size(); at += batch_size) {
    const torch::Tensor ids = torch::arange(at, std::min(at + batch_size, d.size()), torch::kInt64);
    out.push_back(m.features(d.inputs(ids)).flatten(1).to(torch::kFloat64));
  }
  return torch::cat(out);
}

void require_features(const model::Model& m) {
  if (!m.has_features()) {
    throw invalid_argument(
        "--model has no features() (penultimate layer), which the scan reads: zoo models have one; import a "
        "TorchScript model with `bulwark import --feature-layer NAME`");
  }
}

ScanResult scan(const model::Model& m, const data::Dataset& d, const ScanOptions& o) {
  const auto start = std::chrono::steady_clock::now();
  require_features(m);
  data::check_shape(d, m.spec().input_shape);
  const int64_t classes = m.spec().num_classes();
  if (d.size() < 2 * kMinClassRows) {
    throw invalid_argument("--data has " + std::to_string(d.size()) + " rows; a scan needs at least " +
                           std::to_string(2 * kMinClassRows));
  }
  if (d.labels.max().item<int64_t>() >= classes || d.labels.min().item<int64_t>() < 0) {
    throw invalid_argument("--data has labels outside the model's " + std::to_string(classes) + " classes");
  }
  ScanResult result;
  result.options = o;
  result.rows = d.size();
  const torch::Tensor features = features_of(m, d);
  Orientation orientation(d, o);
  std::optional<Whitener> whitener;
  if (o.whiten()) whitener.emplace(features, d.labels, classes, o.shrinkage());
  for (int64_t c = 0; c < classes; ++c) {
    ClassScan cs;
    cs.label = c;
    cs.name = m.spec().class_names[static_cast<size_t>(c)];
    const torch::Tensor rows = torch::nonzero(d.labels.eq(c)).squeeze(1);
    cs.rows = rows.size(0);
    if (cs.rows >= kMinClassRows) {
      torch::Tensor f = features.index_select(0, rows);
      if (whitener) f = f.matmul(whitener->matrix(c));  // not centred here: the spectral variant decides
      if (o.uses_spectral()) spectral(rows, f, cs, result.suspects, orientation, o);
      if (o.uses_clustering()) clustering(rows, f, cs, result.suspects, orientation, o);
    }
    cs.flagged = (cs.spectral && cs.spectral->flagged) || (cs.clustering && cs.clustering->flagged);
    result.flagged_classes += cs.flagged ? 1 : 0;
    if (o.progress()) {
      std::cerr << "class " << c + 1 << "/" << classes << " '" << cs.name << "': " << cs.rows << " rows"
                << (cs.flagged ? ", flagged" : "") << "\n";
    }
    result.classes.push_back(std::move(cs));
  }
  std::set<int64_t> rows;
  for (const auto& s : result.suspects) rows.insert(s.row);
  result.suspected_rows.assign(rows.begin(), rows.end());
  result.failed = result.flagged_classes > 0;
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return result;
}

std::vector<int64_t> ScanResult::rows_of(const std::string& method) const {
  std::vector<int64_t> out;
  for (const auto& s : suspects) {
    if (s.method == method) out.push_back(s.row);
  }
  std::sort(out.begin(), out.end());
  return out;
}

json Split::to_json() const {
  auto number = [](double v) { return std::isfinite(v) ? json(v) : json(nullptr); };
  return {{"statistic", number(statistic)},
          {"separated", separated},
          {"suspect_size", suspect_size},
          {"other_size", other_size},
          {"suspect_other_labels", number(suspect_other_labels)},
          {"other_other_labels", number(other_other_labels)},
          {"flagged", flagged}};
}

json ScanResult::to_json(const std::vector<std::string>& class_names) const {
  json per_class = json::array();
  for (const auto& c : classes) {
    json j = {{"label", c.label}, {"class", c.name}, {"rows", c.rows}, {"flagged", c.flagged}};
    if (c.spectral) j["spectral"] = c.spectral->to_json();
    if (c.clustering) j["clustering"] = c.clustering->to_json();
    per_class.push_back(j);
  }
  json list = json::array();
  for (const auto& s : suspects) {
    list.push_back({{"row", s.row},
                    {"label", s.label},
                    {"class", class_names.at(static_cast<size_t>(s.label))},
                    {"score", s.score},
                    {"method", s.method}});
  }
  // The threat report reads these three numbers at the top level (run kind "poison-scan").
  return {{"suspected", static_cast<int64_t>(suspected_rows.size())},
          {"flagged_classes", flagged_classes},
          {"failed", failed ? 1 : 0},
          {"rows", rows},
          {"per_class", per_class},
          {"suspects", list},
          {"options", options.to_json()},
          {"seconds", seconds}};
}

}  // namespace bulwark::poison
