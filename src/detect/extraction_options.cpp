// detect/extraction_options.cpp — ExtractionOptions: each setter checks its range and names the
// config key and its serve flag; the options as JSON (the detector is in extraction.cpp).
#include <cmath>
#include <string>

#include "core/error.h"
#include "detect/extraction.h"

namespace bulwark::detect {

Policy parse_extraction_policy(const std::string& s) {
  if (s == "flag") return Policy::kFlag;
  if (s == "throttle") return Policy::kThrottle;
  if (s == "block") return Policy::kBlock;
  throw invalid_argument("extraction.policy (--extraction) must be off, flag, throttle or block, got '" + s + "'");
}

namespace {
// "extraction.min_answers (--extraction-min-answers)"
std::string name(const char* key) {
  std::string flag = key;
  for (char& c : flag) c = c == '_' ? '-' : c;
  return std::string("extraction.") + key + " (--extraction-" + flag + ")";
}
template <typename T>
T in_range(const char* key, T v, T lo, T hi) {
  if (v < lo || v > hi) {
    throw invalid_argument(name(key) + " must be in " + std::to_string(lo) + ".." + std::to_string(hi) + ", got " +
                           std::to_string(v));
  }
  return v;
}
double seconds(const char* key, double v) {
  if (!(v > 0 && std::isfinite(v))) {
    throw invalid_argument(name(key) + " must be a positive number of seconds, got " + std::to_string(v));
  }
  return v;
}
// (lo, hi] or [lo, hi] for a probability-like value; also refuses NaN.
double fraction(const char* key, double v, bool zero_allowed) {
  if (!(v <= 1 && (zero_allowed ? v >= 0 : v > 0))) {
    throw invalid_argument(name(key) + " must be in " + (zero_allowed ? "[0, 1]" : "(0, 1]") + ", got " +
                           std::to_string(v));
  }
  return v;
}
double finite(const char* key, double v) {
  if (!std::isfinite(v)) throw invalid_argument(name(key) + " must be finite");
  return v;
}
}  // namespace

ExtractionOptions& ExtractionOptions::delta(double v) {
  delta_ = fraction("delta", v, true);
  return *this;
}
ExtractionOptions& ExtractionOptions::min_distances(int v) {
  min_distances_ = in_range("min_distances", v, 3, 5000);
  return *this;
}
ExtractionOptions& ExtractionOptions::window(int v) {
  window_ = in_range("window", v, 3, 5000);
  return *this;
}
ExtractionOptions& ExtractionOptions::max_set(int v) {
  max_set_ = in_range("max_set", v, 1, 100000);
  return *this;
}
ExtractionOptions& ExtractionOptions::grid(int v) {
  grid_ = in_range("grid", v, 1, 64);
  return *this;
}
ExtractionOptions& ExtractionOptions::confidence(double v) {
  confidence_ = fraction("confidence", v, false);
  return *this;
}
ExtractionOptions& ExtractionOptions::max_unsure_share(double v) {
  max_unsure_share_ = fraction("max_unsure_share", v, false);
  return *this;
}
ExtractionOptions& ExtractionOptions::min_answers(int v) {
  min_answers_ = in_range("min_answers", v, 1, 100000);
  return *this;
}
ExtractionOptions& ExtractionOptions::answer_window(int v) {
  answer_window_ = in_range("answer_window", v, 1, 100000);
  return *this;
}
ExtractionOptions& ExtractionOptions::policy(Policy v) {
  if (v == Policy::kEscalate) throw invalid_argument("extraction.policy (--extraction) must be flag, throttle or block, got 'escalate'");
  policy_ = v;
  return *this;
}
ExtractionOptions& ExtractionOptions::block_s(double v) {
  block_s_ = seconds("block_s", v);
  return *this;
}
ExtractionOptions& ExtractionOptions::max_clients(int64_t v) {
  max_clients_ = in_range<int64_t>("max_clients", v, 1, 10'000'000);
  return *this;
}
ExtractionOptions& ExtractionOptions::max_blocked_clients(int64_t v) {
  max_blocked_clients_ = in_range<int64_t>("max_blocked_clients", v, 1, 10'000'000);
  return *this;
}
ExtractionOptions& ExtractionOptions::max_age_s(double v) {
  max_age_s_ = seconds("max_age_s", v);
  return *this;
}
ExtractionOptions& ExtractionOptions::shards(int v) {
  shards_ = in_range("shards", v, 1, 256);
  return *this;
}
ExtractionOptions& ExtractionOptions::lo(double v) {
  lo_ = finite("lo", v);
  return *this;
}
ExtractionOptions& ExtractionOptions::hi(double v) {
  hi_ = finite("hi", v);
  return *this;
}
ExtractionOptions& ExtractionOptions::key(uint64_t v) {
  key_ = v;
  return *this;
}

nlohmann::json ExtractionOptions::to_json() const {
  return {{"delta", delta_},
          {"min_distances", min_distances_},
          {"window", window_},
          {"max_set", max_set_},
          {"grid", grid_},
          {"confidence", confidence_},
          {"max_unsure_share", max_unsure_share_},
          {"min_answers", min_answers_},
          {"answer_window", answer_window_},
          {"policy", to_string(policy_)},
          {"block_s", block_s_},
          {"max_clients", max_clients_},
          {"max_blocked_clients", max_blocked_clients_},
          {"max_age_s", max_age_s_},
          {"shards", shards_},
          {"lo", lo_},
          {"hi", hi_}};
}

}  // namespace bulwark::detect
