#include "detect/detector.h"

#include <torch/torch.h>

#include <set>
#include <sstream>

#include "attack/squeeze.h"
#include "core/error.h"
#include "model/model.h"

namespace bulwark::detect {
namespace {

// Row-major float tensor <-> nested JSON arrays (calibration files are plain JSON).
nlohmann::json to_json_matrix(const torch::Tensor& t) {
  const auto c = t.contiguous().to(torch::kFloat);
  const float* p = c.data_ptr<float>();
  nlohmann::json rows = nlohmann::json::array();
  for (int64_t i = 0; i < c.size(0); ++i) rows.push_back(std::vector<float>(p + i * c.size(1), p + (i + 1) * c.size(1)));
  return rows;
}

torch::Tensor from_json_matrix(const nlohmann::json& j, const std::string& where) {
  if (!j.is_array() || j.empty() || !j[0].is_array() || j[0].empty()) throw data_format(where + ": expected a matrix");
  const auto rows = static_cast<int64_t>(j.size()), cols = static_cast<int64_t>(j[0].size());
  if (rows > 100000 || cols > 100000) throw data_format(where + ": matrix larger than 100000 rows or columns");
  auto t = torch::empty({rows, cols});
  float* p = t.data_ptr<float>();
  for (int64_t i = 0; i < rows; ++i) {
    if (!j[i].is_array() || static_cast<int64_t>(j[i].size()) != cols) {
      throw data_format(where + ": row " + std::to_string(i) + " does not have " + std::to_string(cols) + " values");
    }
    for (int64_t k = 0; k < cols; ++k) {
      if (!j[i][k].is_number()) throw data_format(where + ": a value in row " + std::to_string(i) + " is not a number");
      p[i * cols + k] = j[i][k].get<float>();
    }
  }
  return t;
}

}  // namespace

torch::Tensor MaxSoftmax::score(const model::Model&, const Batch& b) const {
  return 1.0 - torch::softmax(b.logits, 1).amax(1);
}

torch::Tensor Entropy::score(const model::Model&, const Batch& b) const {
  const auto logp = torch::log_softmax(b.logits, 1);
  const auto h = -(logp.exp() * logp).sum(1);
  const auto k = b.logits.size(1);
  return k > 1 ? h / std::log(static_cast<double>(k)) : torch::zeros_like(h);
}

FeatureSqueezing::FeatureSqueezing(std::vector<std::string> specs, double lo, double hi) : specs_(std::move(specs)) {
  if (specs_.empty()) throw invalid_argument("squeezers: at least one is needed (e.g. bits:4,median:2)");
  for (const auto& s : specs_) squeezers_.push_back(attack::parse_squeezer(s, lo, hi, "squeezers"));
}

torch::Tensor FeatureSqueezing::score(const model::Model& m, const Batch& b) const {
  const auto p = torch::softmax(b.logits, 1);
  torch::Tensor best;
  for (const auto& g : squeezers_) {
    // Straight-through: forward g(x), backward identity (BPDA), so adaptive attacks get a gradient.
    const auto squeezed = b.x + (g(b.x.detach()) - b.x).detach();
    const auto d = (p - torch::softmax(m.logits(squeezed), 1)).abs().sum(1);
    best = best.defined() ? torch::maximum(best, d) : d;
  }
  return best;
}

nlohmann::json FeatureSqueezing::to_json() const { return {{"name", name()}, {"squeezers", specs_}}; }

Mahalanobis::Mahalanobis(torch::Tensor means, torch::Tensor precision)
    : means_(std::move(means)), precision_(std::move(precision)) {
  if (means_.dim() != 2 || precision_.dim() != 2 || precision_.size(0) != precision_.size(1) ||
      precision_.size(0) != means_.size(1)) {
    throw data_format("mahalanobis: means [K, D] and precision [D, D] do not fit together");
  }
  // Per request only f P f and f P mu change; P mu and mu P mu are fixed.
  precision_means_ = precision_.mm(means_.t()).contiguous();  // [D, K]
  means_term_ = (means_.mm(precision_) * means_).sum(1).unsqueeze(0);
}

std::shared_ptr<Mahalanobis> Mahalanobis::fit(const torch::Tensor& features, const torch::Tensor& labels,
                                              int64_t classes) {
  torch::NoGradGuard ng;
  const auto f = features.detach().to(torch::kDouble);
  const int64_t d = f.size(1);
  auto means = torch::zeros({classes, d}, torch::kDouble);
  auto centered = torch::empty_like(f);
  for (int64_t k = 0; k < classes; ++k) {
    const auto idx = (labels == k).nonzero().squeeze(1);
    if (idx.numel() < 2) {
      throw invalid_argument("mahalanobis: class " + std::to_string(k) + " has " + std::to_string(idx.numel()) +
                             " fitting points (need >= 2): use more calibration data");
    }
    const auto fk = f.index_select(0, idx);
    means[k] = fk.mean(0);
    centered.index_copy_(0, idx, fk - means[k]);
  }
  // Tied covariance; a small ridge keeps it invertible when features are rank-deficient (dead ReLUs).
  auto cov = centered.t().mm(centered) / static_cast<double>(f.size(0));
  const double ridge = 1e-6 * std::max(1e-12, cov.diagonal().mean().item<double>());
  cov += ridge * torch::eye(d, torch::kDouble);
  const auto precision = torch::linalg::pinv(cov);
  return std::make_shared<Mahalanobis>(means.to(torch::kFloat), precision.to(torch::kFloat));
}

torch::Tensor Mahalanobis::score(const model::Model&, const Batch& b) const {
  if (!b.features.defined()) throw invalid_argument("mahalanobis needs a model with features()");
  // (f - mu)^T P (f - mu) = f^T P f - 2 f^T P mu + mu^T P mu, for every class at once.
  const auto f = b.features.flatten(1);
  const auto self = (f.mm(precision_) * f).sum(1, true);                   // [N, 1]
  const auto cross = torch::addmm(means_term_, f, precision_means_, 1, -2);  // mu P mu - 2 f P mu, [N, K]
  return (cross + self).amin(1).clamp_min(0);
}

nlohmann::json Mahalanobis::to_json() const {
  return {{"name", name()}, {"means", to_json_matrix(means_)}, {"precision", to_json_matrix(precision_)}};
}

PcaWhitened::PcaWhitened(torch::Tensor mean, torch::Tensor basis, torch::Tensor inv_var)
    : mean_(std::move(mean)), basis_(std::move(basis)), inv_var_(std::move(inv_var)) {
  if (mean_.dim() != 1 || basis_.dim() != 2 || inv_var_.dim() != 1 || basis_.size(0) != mean_.size(0) ||
      basis_.size(1) != inv_var_.size(0)) {
    throw data_format("pca: mean [D], basis [D, M] and inv_var [M] do not fit together");
  }
}

std::shared_ptr<PcaWhitened> PcaWhitened::fit(const torch::Tensor& x, double leading_fraction) {
  torch::NoGradGuard ng;
  const auto f = x.detach().flatten(1).to(torch::kDouble);
  const int64_t d = f.size(1);
  if (f.size(0) < d) {
    throw invalid_argument("pca: needs at least as many fitting points as input values (" + std::to_string(d) +
                           "), got " + std::to_string(f.size(0)) + ": raise --fit-n");
  }
  const auto mean = f.mean(0);
  const auto c = f - mean;
  const auto cov = c.t().mm(c) / static_cast<double>(f.size(0));
  const auto [values, vectors] = torch::linalg::eigh(cov, "L");  // ascending
  const int64_t keep = d - static_cast<int64_t>(std::round(leading_fraction * d));
  if (keep < 1) throw invalid_argument("pca: no trailing components left");
  // Floor the variances relative to the average one: some trailing directions have none at all.
  const double floor = 1e-5 * values.mean().item<double>();
  const auto inv = 1.0 / values.narrow(0, 0, keep).clamp_min(floor);
  return std::make_shared<PcaWhitened>(mean.to(torch::kFloat), vectors.narrow(1, 0, keep).to(torch::kFloat),
                                       inv.to(torch::kFloat));
}

torch::Tensor PcaWhitened::score(const model::Model&, const Batch& b) const {
  const auto c = (b.x.flatten(1) - mean_).mm(basis_);
  return (c * c * inv_var_).sum(1);
}

nlohmann::json PcaWhitened::to_json() const {
  return {{"name", name()},
          {"mean", to_json_matrix(mean_.unsqueeze(0))},
          {"basis", to_json_matrix(basis_)},
          {"inv_var", to_json_matrix(inv_var_.unsqueeze(0))}};
}

const std::vector<std::string>& known_detectors() {
  static const std::vector<std::string> names{"max-softmax", "entropy", "squeeze", "mahalanobis", "pca"};
  return names;
}

std::vector<std::string> parse_detector_list(const std::string& csv, const std::string& flag) {
  std::vector<std::string> out;
  std::stringstream in(csv);
  std::string item;
  std::set<std::string> seen;
  while (std::getline(in, item, ',')) {
    const auto& known = known_detectors();
    if (std::find(known.begin(), known.end(), item) == known.end()) {
      throw invalid_argument(flag + ": unknown detector '" + item +
                             "' (known: max-softmax, entropy, squeeze, mahalanobis, pca)");
    }
    if (!seen.insert(item).second) throw invalid_argument(flag + ": detector '" + item + "' is listed twice");
    out.push_back(item);
  }
  if (out.empty()) throw invalid_argument(flag + " is empty");
  return out;
}

std::shared_ptr<Detector> make_detector(const std::string& name, double lo, double hi,
                                        const std::vector<std::string>& squeezers) {
  if (name == "max-softmax") return std::make_shared<MaxSoftmax>();
  if (name == "entropy") return std::make_shared<Entropy>();
  if (name == "squeeze") return std::make_shared<FeatureSqueezing>(squeezers, lo, hi);
  if (name == "mahalanobis" || name == "pca") throw invalid_argument(name + " must be fitted (fit())");
  throw invalid_argument("unknown detector '" + name + "'");
}

std::shared_ptr<Detector> detector_from_json(const nlohmann::json& j, double lo, double hi, const std::string& where) {
  if (!j.is_object() || !j.contains("name") || !j["name"].is_string()) throw data_format(where + ": 'name' missing");
  const auto name = j["name"].get<std::string>();
  if (name == "mahalanobis") {
    if (!j.contains("means") || !j.contains("precision")) throw data_format(where + ": mahalanobis needs means and precision");
    return std::make_shared<Mahalanobis>(from_json_matrix(j["means"], where + ".means"),
                                         from_json_matrix(j["precision"], where + ".precision"));
  }
  if (name == "pca") {
    for (const char* k : {"mean", "basis", "inv_var"}) {
      if (!j.contains(k)) throw data_format(where + ": pca needs '" + std::string(k) + "'");
    }
    return std::make_shared<PcaWhitened>(from_json_matrix(j["mean"], where + ".mean").squeeze(0),
                                         from_json_matrix(j["basis"], where + ".basis"),
                                         from_json_matrix(j["inv_var"], where + ".inv_var").squeeze(0));
  }
  if (name == "squeeze") {
    if (!j.contains("squeezers") || !j["squeezers"].is_array()) throw data_format(where + ": squeeze needs 'squeezers'");
    std::vector<std::string> specs;
    for (const auto& s : j["squeezers"]) {
      if (!s.is_string()) throw data_format(where + ".squeezers: expected strings");
      specs.push_back(s.get<std::string>());
    }
    return std::make_shared<FeatureSqueezing>(specs, lo, hi);
  }
  if (name == "max-softmax" || name == "entropy") return make_detector(name, lo, hi, {});
  throw data_format(where + ": unknown detector '" + name + "'");
}

}  // namespace bulwark::detect
