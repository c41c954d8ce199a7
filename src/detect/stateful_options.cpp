// detect/stateful_options.cpp — StatefulOptions: each setter checks its range and names the key;
// the policy names; the options as JSON (the detector itself is in stateful.cpp).
#include <cmath>
#include <string>

#include "core/error.h"
#include "detect/stateful.h"

namespace bulwark::detect {

Policy parse_policy(const std::string& s) {
  if (s == "flag") return Policy::kFlag;
  if (s == "throttle") return Policy::kThrottle;
  if (s == "block") return Policy::kBlock;
  if (s == "escalate") return Policy::kEscalate;
  throw invalid_argument("stateful.policy must be flag, throttle, block or escalate, got '" + s + "'");
}

std::string to_string(Policy p) {
  switch (p) {
    case Policy::kFlag:
      return "flag";
    case Policy::kThrottle:
      return "throttle";
    case Policy::kEscalate:
      return "escalate";
    case Policy::kBlock:
      return "block";
  }
  return "unknown";
}

namespace {
// The setters' checks; each returns v or throws naming the config key.
template <typename T>
T in_range(const char* key, T v, T lo, T hi) {
  if (v < lo || v > hi) {
    throw invalid_argument(std::string("stateful.") + key + " must be in " + std::to_string(lo) + ".." +
                           std::to_string(hi) + ", got " + std::to_string(v));
  }
  return v;
}
double seconds(const char* key, double v) {
  if (!(v > 0 && std::isfinite(v))) {
    throw invalid_argument(std::string("stateful.") + key + " must be a positive number of seconds, got " +
                           std::to_string(v));
  }
  return v;
}
double finite(const char* key, double v) {
  if (!std::isfinite(v)) throw invalid_argument(std::string("stateful.") + key + " must be finite");
  return v;
}
}  // namespace

StatefulOptions& StatefulOptions::quant_step(int v) {
  quant_step_ = in_range("quant_step", v, 1, 255);
  return *this;
}
StatefulOptions& StatefulOptions::window(int v) {
  window_ = in_range("window", v, 1, 4096);
  return *this;
}
StatefulOptions& StatefulOptions::stride(int v) {
  stride_ = in_range("stride", v, 1, 4096);
  return *this;
}
StatefulOptions& StatefulOptions::top_k(int v) {
  top_k_ = in_range("top_k", v, 1, 1024);
  return *this;
}
StatefulOptions& StatefulOptions::match_threshold(int v) {
  match_threshold_ = in_range("match_threshold", v, 1, 1024);
  return *this;
}
StatefulOptions& StatefulOptions::max_queries_per_client(int64_t v) {
  max_queries_per_client_ = in_range<int64_t>("max_queries_per_client", v, 1, 10'000'000);
  return *this;
}
StatefulOptions& StatefulOptions::max_clients(int64_t v) {
  max_clients_ = in_range<int64_t>("max_clients", v, 1, 10'000'000);
  return *this;
}
StatefulOptions& StatefulOptions::max_age_s(double v) {
  max_age_s_ = seconds("max_age_s", v);
  return *this;
}
StatefulOptions& StatefulOptions::hits_to_flag(int v) {
  hits_to_flag_ = in_range("hits_to_flag", v, 1, 1000);
  return *this;
}
StatefulOptions& StatefulOptions::hits_to_block(int v) {
  hits_to_block_ = in_range("hits_to_block", v, 1, 1000);
  return *this;
}
StatefulOptions& StatefulOptions::flag_window_s(double v) {
  flag_window_s_ = seconds("flag_window_s", v);
  return *this;
}
StatefulOptions& StatefulOptions::policy(Policy v) {
  policy_ = v;
  return *this;
}
StatefulOptions& StatefulOptions::block_s(double v) {
  block_s_ = seconds("block_s", v);
  return *this;
}
StatefulOptions& StatefulOptions::lo(double v) {
  lo_ = finite("lo", v);
  return *this;
}
StatefulOptions& StatefulOptions::hi(double v) {
  hi_ = finite("hi", v);
  return *this;
}
StatefulOptions& StatefulOptions::grid(int v) {
  grid_ = in_range("grid", v, 1, 64);
  return *this;
}
StatefulOptions& StatefulOptions::distance(double v) {
  if (!(v >= 0 && v <= 1)) {  // also NaN
    throw invalid_argument("stateful.distance (--stateful-distance) must be in [0, 1] (a fraction of the input range), got " +
                           std::to_string(v));
  }
  distance_ = v;
  return *this;
}
StatefulOptions& StatefulOptions::max_blocked_clients(int64_t v) {
  max_blocked_clients_ = in_range<int64_t>("max_blocked_clients", v, 1, 10'000'000);
  return *this;
}
StatefulOptions& StatefulOptions::shards(int v) {
  shards_ = in_range("shards", v, 1, 256);
  return *this;
}
StatefulOptions& StatefulOptions::key(uint64_t v) {
  key_ = v;
  return *this;
}

nlohmann::json StatefulOptions::to_json() const {
  return {{"quant_step", quant_step_},
          {"window", window_},
          {"stride", stride_},
          {"top_k", top_k_},
          {"match_threshold", match_threshold_},
          {"max_queries_per_client", max_queries_per_client_},
          {"max_clients", max_clients_},
          {"max_age_s", max_age_s_},
          {"hits_to_flag", hits_to_flag_},
          {"flag_window_s", flag_window_s_},
          {"policy", to_string(policy_)},
          {"block_s", block_s_},
          {"lo", lo_},
          {"hi", hi_},
          {"max_blocked_clients", max_blocked_clients_},
          {"hits_to_block", hits_to_block_},
          {"grid", grid_},
          {"distance", distance_},
          {"shards", shards_}};
}

}  // namespace bulwark::detect
