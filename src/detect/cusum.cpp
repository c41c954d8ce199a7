#include "detect/cusum.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <map>
#include <random>
#include <string>

#include "core/error.h"

namespace bulwark::detect {
namespace detail {

// --- The four CUSUMs' increments. Bernoulli streams use the log-likelihood ratio of the shifted
// rate p1 against p0, which makes the CUSUM Page's optimal test for that shift and fixes theta = 1.
Increments bernoulli(double p0, double p1) {
  return {{std::log(p1 / p0), std::log((1 - p1) / (1 - p0))}, {p0, 1 - p0}};
}
double detector_alt(const MonitorReference& r, const MonitorOptions& o) {
  const double p0 = r.detector_rate;
  return std::min(std::max(o.detector_rate_ratio() * p0, o.detector_rate_min()), (1 + p0) / 2);
}
double error_alt(const MonitorReference& r, const MonitorOptions& o) {
  return 1 - r.accuracy * (1 - o.accuracy_drop());
}
double class_alt(double p0, const MonitorOptions& o) { return p0 + o.class_share_shift() * (1 - p0); }

}  // namespace detail
namespace {

using detail::bernoulli;
using detail::class_alt;
using detail::detector_alt;
using detail::error_alt;
using nlohmann::json;
constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr size_t kMaxAtoms = 256;

json num_or_null(double v) { return std::isfinite(v) ? json(v) : json(nullptr); }

template <class T>
MonitorOptions& set(MonitorOptions& o, T& field, T v, bool ok, const char* key, const char* range) {
  if (!ok) throw invalid_argument(std::string("monitor.") + key + " must be " + range + ", got " + std::to_string(v));
  field = v;
  return o;
}

uint64_t mix_seed(uint64_t seed, uint64_t stream) {  // splitmix64: independent streams from one seed
  uint64_t z = seed + 0x9e3779b97f4a7c15ULL * (stream + 1);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

double num(const json& j, const char* key, const char* what) {
  auto it = j.find(key);
  if (it == j.end()) throw data_format(std::string(what) + "." + key + " is missing");
  if (it->is_null()) return kNaN;  // NaN and inf are written as null
  if (!it->is_number()) throw data_format(std::string(what) + "." + key + " must be a number");
  return it->get<double>();
}

std::vector<double> num_array(const json& j, const char* key, const char* what) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_array()) throw data_format(std::string(what) + "." + key + " must be an array");
  std::vector<double> out;
  for (const auto& v : *it) {
    if (!v.is_number()) throw data_format(std::string(what) + "." + key + " must hold numbers");
    out.push_back(v.get<double>());
  }
  return out;
}

// Confidence: standardized drop minus k = shift / 2 (the classic reference value for a mean shift),
// bootstrapped from the stored atoms rather than assuming normality.
Increments confidence_increments(const MonitorReference& r, const MonitorOptions& o) {
  Increments inc;
  const double k = o.confidence_shift_sd() / 2;
  for (double q : r.confidence_atoms) {
    inc.values.push_back((r.confidence_mean - q) / r.confidence_sd - k);
    inc.probs.push_back(1.0 / static_cast<double>(r.confidence_atoms.size()));
  }
  return inc;
}

// --- Threshold search by simulation.
struct Sampler {
  std::vector<double> cdf, values;
  Sampler(const std::vector<double>& v, const std::vector<double>& w) : values(v) {
    double total = 0;
    for (double x : w) total += x;
    double acc = 0;
    for (double x : w) cdf.push_back(acc += x / total);
  }
  double draw(std::mt19937_64& rng) const {
    const double u = static_cast<double>(rng() >> 11) * 0x1.0p-53;
    const size_t i = std::upper_bound(cdf.begin(), cdf.end(), u) - cdf.begin();
    return values[std::min(i, values.size() - 1)];
  }
};

double log_mgf(const Increments& inc, double theta) {
  double m = -kInf;
  for (size_t i = 0; i < inc.values.size(); ++i) m = std::max(m, theta * inc.values[i]);
  double s = 0;
  for (size_t i = 0; i < inc.values.size(); ++i) s += inc.probs[i] * std::exp(theta * inc.values[i] - m);
  return m + std::log(s);
}

// The Lundberg root theta > 0 with E[exp(theta X)] = 1: tilting by it turns the clean law into
// one with positive drift, and a path's likelihood ratio into exp(-theta * sum X). Needs E[X] < 0.
double theta_star(const Increments& inc) {
  double hi = 1;
  while (log_mgf(inc, hi) < 0 && hi < 1e6) hi *= 2;
  double lo = 0;
  for (int i = 0; i < 100; ++i) {
    const double mid = (lo + hi) / 2;
    (log_mgf(inc, mid) < 0 ? lo : hi) = mid;
  }
  return hi;
}

void validate_increments(const Increments& inc) {
  if (inc.values.empty() || inc.values.size() != inc.probs.size())
    throw invalid_argument("cusum increments need as many probabilities as values, at least one");
  double total = 0, mean = 0;
  for (size_t i = 0; i < inc.values.size(); ++i) {
    if (!(inc.probs[i] >= 0) || !std::isfinite(inc.values[i]))
      throw invalid_argument("cusum increments must be finite with probabilities >= 0");
    total += inc.probs[i];
    mean += inc.probs[i] * inc.values[i];
  }
  if (std::fabs(total - 1) > 1e-6) throw invalid_argument("cusum increment probabilities must sum to 1");
  if (!(mean < 0)) throw invalid_argument("cusum increments must drift down (negative mean) on clean traffic");
}

// Newton steps on log ARL (which grows like theta * h), each aimed a little past the root so that
// the next evaluation lands on its other side; then bisection. h to 0.01 / theta, i.e. ARL to ~1 %,
// finer than the simulation's own noise. About ten ARL estimates in all.
double search_threshold(const std::function<double(double)>& arl_of, double theta, double target) {
  const double tol = 0.01 / theta;
  double lo = 0, hi = kInf, h = std::log(target) / theta;
  for (int it = 0; it < 60; ++it) {
    const double a = arl_of(h);
    (a >= target ? hi : lo) = h;
    if (hi - lo < tol) break;
    const double newton = h + (std::log(target) - std::log(a)) / theta;
    const double aimed = newton + (a >= target ? -tol : tol);
    if (it < 6 && std::isfinite(aimed) && aimed > lo && aimed < hi) {
      h = aimed;
    } else if (!std::isfinite(hi)) {
      h = lo + std::max(1.0, lo) / theta;
    } else {
      h = (lo + hi) / 2;
    }
  }
  return hi;
}

}  // namespace

// --- Options -----------------------------------------------------------------------------------
MonitorOptions& MonitorOptions::window_s(double v) {
  return set(*this, window_s_, v, v > 0 && v <= 3600, "window_s", "in (0, 3600]");
}
MonitorOptions& MonitorOptions::arl0_hours(double v) {
  return set(*this, arl0_hours_, v, v > 0 && v <= 1e5, "arl0_hours", "in (0, 100000]");
}
MonitorOptions& MonitorOptions::expected_rate_hz(double v) {
  return set(*this, expected_rate_hz_, v, v > 0 && v <= 1e6, "expected_rate_hz", "in (0, 1e6]");
}
MonitorOptions& MonitorOptions::feedback_rate_hz(double v) {
  return set(*this, feedback_rate_hz_, v, v > 0 && v <= 1e6, "feedback_rate_hz", "in (0, 1e6]");
}
MonitorOptions& MonitorOptions::cooldown_s(double v) {
  return set(*this, cooldown_s_, v, v >= 0 && v <= 86400, "cooldown_s", "in [0, 86400]");
}
MonitorOptions& MonitorOptions::clear_after_s(double v) {
  return set(*this, clear_after_s_, v, v > 0 && v <= 86400, "clear_after_s", "in (0, 86400]");
}
MonitorOptions& MonitorOptions::min_feedback(int64_t v) {
  return set(*this, min_feedback_, v, v >= 0 && v <= 1000000, "min_feedback", "in [0, 1000000]");
}
MonitorOptions& MonitorOptions::detector_rate_ratio(double v) {
  return set(*this, detector_rate_ratio_, v, v > 1 && v <= 1000, "detector_rate_ratio", "in (1, 1000]");
}
MonitorOptions& MonitorOptions::detector_rate_min(double v) {
  return set(*this, detector_rate_min_, v, v > 0 && v < 1, "detector_rate_min", "in (0, 1)");
}
MonitorOptions& MonitorOptions::confidence_shift_sd(double v) {
  return set(*this, confidence_shift_sd_, v, v > 0 && v <= 10, "confidence_shift_sd", "in (0, 10]");
}
MonitorOptions& MonitorOptions::class_share_shift(double v) {
  return set(*this, class_share_shift_, v, v > 0 && v < 1, "class_share_shift", "in (0, 1)");
}
MonitorOptions& MonitorOptions::accuracy_drop(double v) {
  return set(*this, accuracy_drop_, v, v > 0 && v < 1, "accuracy_drop", "in (0, 1)");
}

json MonitorOptions::to_json() const {
  return json{{"window_s", window_s_},
              {"arl0_hours", arl0_hours_},
              {"expected_rate_hz", expected_rate_hz_},
              {"feedback_rate_hz", feedback_rate_hz_},
              {"cooldown_s", cooldown_s_},
              {"clear_after_s", clear_after_s_},
              {"min_feedback", min_feedback_},
              {"detector_rate_ratio", detector_rate_ratio_},
              {"detector_rate_min", detector_rate_min_},
              {"confidence_shift_sd", confidence_shift_sd_},
              {"class_share_shift", class_share_shift_},
              {"accuracy_drop", accuracy_drop_}};
}

// --- Reference ---------------------------------------------------------------------------------
MonitorReference MonitorReference::fit(const std::vector<float>& confidences, const std::vector<bool>& detector_hits,
                                       const std::vector<int64_t>& predicted_classes, int64_t num_classes,
                                       const std::vector<bool>& correct) {
  const size_t n = confidences.size();
  if (n < 10)
    throw invalid_argument("monitor reference needs at least 10 clean observations, got " + std::to_string(n));
  if (detector_hits.size() != n || predicted_classes.size() != n || (!correct.empty() && correct.size() != n))
    throw invalid_argument("monitor reference inputs must all have one entry per clean observation");
  if (num_classes < 2 || num_classes > 1000000)
    throw invalid_argument("monitor reference num_classes must be in 2..1000000");
  MonitorReference r;
  r.samples = static_cast<int64_t>(n);
  std::vector<double> c(n);
  double sum = 0, sum2 = 0, hits = 0;
  std::vector<double> counts(num_classes, 0.0);
  for (size_t i = 0; i < n; ++i) {
    if (!std::isfinite(confidences[i])) throw invalid_argument("monitor reference confidences must be finite");
    c[i] = std::clamp(static_cast<double>(confidences[i]), 0.0, 1.0);
    sum += c[i];
    sum2 += c[i] * c[i];
    hits += detector_hits[i];
    if (predicted_classes[i] < 0 || predicted_classes[i] >= num_classes)
      throw invalid_argument("monitor reference predicted class " + std::to_string(predicted_classes[i]) +
                             " is outside 0.." + std::to_string(num_classes - 1));
    counts[predicted_classes[i]] += 1;
  }
  const double dn = static_cast<double>(n);
  r.detector_rate = (hits + 0.5) / (dn + 1);
  r.confidence_mean = sum / dn;
  r.confidence_sd = std::max(1e-3, std::sqrt(std::max(0.0, sum2 / dn - r.confidence_mean * r.confidence_mean)));
  // Slice means rather than quantiles: they keep the mean exactly and the weight of the extreme
  // tails, which is where a CUSUM's false alarms come from.
  std::sort(c.begin(), c.end());
  const size_t m = std::min(n, kMaxAtoms);
  for (size_t i = 0; i < m; ++i) {
    const size_t lo = i * n / m, hi = (i + 1) * n / m;
    double slice = 0;
    for (size_t k = lo; k < hi; ++k) slice += c[k];
    r.confidence_atoms.push_back(slice / static_cast<double>(hi - lo));
  }
  for (double& k : counts) k = (k + 0.5) / (dn + 0.5 * static_cast<double>(num_classes));
  r.class_frequencies = std::move(counts);
  if (!correct.empty()) {
    double right = 0;
    for (bool b : correct) right += b;
    r.accuracy = (right + 0.5) / (dn + 1);
  }
  return r;
}

void MonitorReference::validate() const {
  auto bad = [](const std::string& what) { return data_format("monitor_reference." + what); };
  if (!(detector_rate > 0 && detector_rate < 1)) throw bad("detector_rate must be in (0, 1)");
  if (!(confidence_mean >= 0 && confidence_mean <= 1)) throw bad("confidence_mean must be in [0, 1]");
  if (!(confidence_sd > 0 && confidence_sd <= 1)) throw bad("confidence_sd must be in (0, 1]");
  if (confidence_atoms.empty() || confidence_atoms.size() > 4096)
    throw bad("confidence_atoms must hold 1..4096 values");
  for (size_t i = 0; i < confidence_atoms.size(); ++i)
    if (!(confidence_atoms[i] >= 0 && confidence_atoms[i] <= 1) || (i && confidence_atoms[i] < confidence_atoms[i - 1]))
      throw bad("confidence_atoms must be sorted values in [0, 1]");
  if (class_frequencies.size() < 2 || class_frequencies.size() > 1000000)
    throw bad("class_frequencies must hold 2..1000000 values");
  double total = 0;
  for (double f : class_frequencies) {
    if (!(f > 0 && f < 1)) throw bad("class_frequencies must be in (0, 1)");
    total += f;
  }
  if (std::fabs(total - 1) > 1e-6) throw bad("class_frequencies must sum to 1");
  if (!std::isnan(accuracy) && !(accuracy > 0 && accuracy < 1)) throw bad("accuracy must be in (0, 1) or null");
}

json MonitorReference::to_json() const {
  return json{{"detector_rate", detector_rate},
              {"confidence_mean", confidence_mean},
              {"confidence_sd", confidence_sd},
              {"confidence_atoms", confidence_atoms},
              {"class_frequencies", class_frequencies},
              {"accuracy", num_or_null(accuracy)},
              {"samples", samples}};
}

MonitorReference MonitorReference::from_json(const json& j) {
  const char* what = "monitor_reference";
  if (!j.is_object()) throw data_format("monitor_reference must be a JSON object");
  MonitorReference r;
  r.detector_rate = num(j, "detector_rate", what);
  r.confidence_mean = num(j, "confidence_mean", what);
  r.confidence_sd = num(j, "confidence_sd", what);
  r.confidence_atoms = num_array(j, "confidence_atoms", what);
  r.class_frequencies = num_array(j, "class_frequencies", what);
  r.accuracy = j.contains("accuracy") ? num(j, "accuracy", what) : kNaN;
  r.samples = j.contains("samples") ? static_cast<int64_t>(num(j, "samples", what)) : 0;
  r.validate();
  return r;
}

// --- Thresholds --------------------------------------------------------------------------------
json MonitorThresholds::to_json() const {
  // null: detector off (infinite threshold)
  return json{{"h_detector_rate", num_or_null(h_detector_rate)},
              {"h_confidence", num_or_null(h_confidence)},
              {"h_class_mix", num_or_null(h_class_mix)},
              {"h_accuracy", num_or_null(h_accuracy)},
              {"arl0_hours", arl0_hours},
              {"seed", seed}};
}

MonitorThresholds MonitorThresholds::from_json(const json& j) {
  const char* what = "monitor_thresholds";
  if (!j.is_object()) throw data_format("monitor_thresholds must be a JSON object");
  MonitorThresholds t;
  double* fields[] = {&t.h_detector_rate, &t.h_confidence, &t.h_class_mix, &t.h_accuracy};
  const char* keys[] = {"h_detector_rate", "h_confidence", "h_class_mix", "h_accuracy"};
  for (int i = 0; i < 4; ++i) {
    *fields[i] = num(j, keys[i], what);
    if (std::isnan(*fields[i])) *fields[i] = kInf;
    if (!(*fields[i] >= 0)) throw data_format(std::string(what) + "." + keys[i] + " must be >= 0 or null");
  }
  t.arl0_hours = j.contains("arl0_hours") ? num(j, "arl0_hours", what) : 0;
  t.seed = j.contains("seed") && j["seed"].is_number_unsigned() ? j["seed"].get<uint64_t>() : 0;
  return t;
}

// --- Calibration by simulation -----------------------------------------------------------------
double cusum_arl(const Increments& inc, double h, uint64_t seed, int excursions) {
  validate_increments(inc);
  if (*std::max_element(inc.values.begin(), inc.values.end()) <= 0) return kInf;  // never leaves 0
  const double theta = theta_star(inc);
  std::vector<double> tilted(inc.probs.size());
  for (size_t i = 0; i < tilted.size(); ++i) tilted[i] = inc.probs[i] * std::exp(theta * inc.values[i]);
  const Sampler clean(inc.values, inc.probs), shifted(inc.values, tilted);
  std::mt19937_64 rng(seed);
  // E[excursion length] under the clean law: excursions are short (negative drift), so plain
  // Monte Carlo with 4x the paths is cheap.
  const int n_clean = 4 * excursions;
  double steps = 0;
  for (int e = 0; e < n_clean; ++e) {
    double s = 0;
    do {
      s += clean.draw(rng);
      ++steps;
    } while (s > 0 && s <= h);
  }
  // P(excursion passes h) under the tilted law, weighted back by the likelihood ratio.
  double pass = 0;
  for (int e = 0; e < excursions; ++e) {
    double s = 0;
    do s += shifted.draw(rng);
    while (s > 0 && s <= h);
    if (s > h) pass += std::exp(-theta * s);
  }
  if (pass <= 0) return kInf;
  return (steps / n_clean) / (pass / excursions);
}

double cusum_threshold(const Increments& inc, double arl, uint64_t seed) {
  validate_increments(inc);
  if (!(arl >= 1)) throw invalid_argument("cusum target ARL must be >= 1 observation");
  if (*std::max_element(inc.values.begin(), inc.values.end()) <= 0) return 1.0;  // clean traffic never moves it
  return search_threshold([&](double h) { return cusum_arl(inc, h, seed); }, theta_star(inc), arl);
}

// Class mix: one Bernoulli CUSUM per class on "this class's share rose", alarm when any crosses.
// Each resets alone, so their crossing rates add exactly: 1/ARL = sum_k 1/ARL_k(h). Classes with
// reference shares within 1 % share one simulation, which keeps 1000 classes fast.
static double class_threshold(const MonitorReference& r, const MonitorOptions& o, double arl, uint64_t seed) {
  std::map<int64_t, std::pair<double, double>> bins;  // log-share bin -> (count, sum of shares)
  for (double p : r.class_frequencies) {
    auto& b = bins[static_cast<int64_t>(std::floor(std::log(p) / std::log(1.01)))];
    b.first += 1;
    b.second += p;
  }
  std::vector<std::pair<double, Increments>> groups;
  for (const auto& [key, b] : bins) {
    const double p0 = b.second / b.first;
    groups.emplace_back(b.first, bernoulli(p0, class_alt(p0, o)));
  }
  const int excursions = std::clamp(16384 / static_cast<int>(groups.size()), 256, 4096);
  auto arl_of = [&](double h) {
    double rate = 0;
    for (size_t g = 0; g < groups.size(); ++g)
      rate += groups[g].first / cusum_arl(groups[g].second, h, mix_seed(seed, g), excursions);
    return rate > 0 ? 1 / rate : kInf;
  };
  return search_threshold(arl_of, 1.0, arl);  // LLR increments: theta = 1
}

MonitorThresholds calibrate_thresholds(const MonitorReference& r, const MonitorOptions& o, uint64_t seed) {
  r.validate();
  MonitorThresholds t;
  t.arl0_hours = o.arl0_hours();
  t.seed = seed;
  const bool labels = std::isfinite(r.accuracy);
  // False-alarm rates of independent detectors add, so each gets (number active) x the ARL0.
  const double per_detector_s = o.arl0_hours() * 3600 * (labels ? 4 : 3);
  const double n_obs = per_detector_s * o.expected_rate_hz();
  t.h_detector_rate = cusum_threshold(bernoulli(r.detector_rate, detector_alt(r, o)), n_obs, mix_seed(seed, 100));
  t.h_confidence = cusum_threshold(confidence_increments(r, o), n_obs, mix_seed(seed, 101));
  t.h_class_mix = class_threshold(r, o, n_obs, mix_seed(seed, 102));
  t.h_accuracy = labels ? cusum_threshold(bernoulli(1 - r.accuracy, error_alt(r, o)),
                                          per_detector_s * o.feedback_rate_hz(), mix_seed(seed, 103))
                        : kInf;
  return t;
}

}  // namespace bulwark::detect
