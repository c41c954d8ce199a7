#include "detect/extraction.h"

#include "detect/detail/cells.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <deque>
#include <functional>
#include <list>
#include <mutex>
#include <random>
#include <unordered_map>

#include "core/error.h"
#include "detect/shapiro_wilk.h"

namespace bulwark::detect {
namespace {

uint64_t mix(uint64_t h) {  // Murmur3's fmix64, as stateful.cpp
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdULL;
  h ^= h >> 33;
  h *= 0xc4ceb9fe1a85ec53ULL;
  h ^= h >> 33;
  return h;
}

// Estimates for the memory figures: a deque slot and malloc's header per stored view, a class's
// fixed share (map node, deques), a client's fixed share (maps, LRU node, a name of up to 64 bytes twice).
constexpr size_t kViewOverhead = 32 + 16, kClassBytes = 256, kClientBytes = 1024;

// One class's growing set G_c: its members, the distances that admitted them, and T_c.
struct ClassSet {
  std::deque<std::vector<uint8_t>> members;  // oldest first
  std::deque<double> admitted;               // the distance each member was admitted with (0: the first)
  double threshold = 0;                      // T_c
};

}  // namespace

struct ExtractionDetector::Client {
  std::unordered_map<int64_t, ClassSet> classes;
  std::deque<int64_t> order;       // class of each stored member, oldest first (for max_set eviction)
  std::deque<double> distances;    // D: the last `window` min distances
  std::deque<uint8_t> unsure;      // the last answer_window answers: 1 = below `confidence`
  int64_t unsure_count = 0;
  int64_t queries = 0;
  double flagged_until = 0;  // flagged (any policy) until then
  double last_s = 0;
  double last_w = -1, last_share = -1;
  bool last_prada = false, last_unsure = false;
  std::list<std::string>::iterator lru;
};

struct ExtractionDetector::Shard {
  mutable std::mutex mu;
  std::unordered_map<std::string, Client> clients;
  std::list<std::string> lru;  // least recently active first
  int64_t capacity = 0;
  int64_t queries = 0;
  struct Enforcement {
    double until_s = 0;
    bool block = false;
  };
  std::unordered_map<std::string, Enforcement> blocks;  // apart from clients: eviction never lifts one
  int64_t block_capacity = 0;
};

ExtractionDetector::ExtractionDetector(ExtractionOptions o) : options_(std::move(o)) {
  const auto& x = options_;
  if (x.min_distances() > x.window()) {
    throw invalid_argument("extraction.min_distances (" + std::to_string(x.min_distances()) +
                           ") must be <= extraction.window (" + std::to_string(x.window()) + ")");
  }
  if (x.min_answers() > x.answer_window()) {
    throw invalid_argument("extraction.min_answers (" + std::to_string(x.min_answers()) +
                           ") must be <= extraction.answer_window (" + std::to_string(x.answer_window()) + ")");
  }
  if (!(x.lo() < x.hi())) throw invalid_argument("extraction.lo must be < extraction.hi");
  if (x.delta() == 0 && x.max_unsure_share() >= 1) {
    throw invalid_argument("extraction: both statistics are off (extraction.delta 0 and extraction.max_unsure_share 1)");
  }
  while (options_.key() == 0) {
    std::random_device rd;
    options_.key((static_cast<uint64_t>(rd()) << 32) ^ rd());
  }
  const int64_t n = std::min<int64_t>(x.shards(), x.max_clients());
  for (int64_t i = 0; i < n; ++i) {
    shards_.push_back(std::make_unique<Shard>());
    shards_.back()->capacity = x.max_clients() / n + (i < x.max_clients() % n ? 1 : 0);
    shards_.back()->block_capacity = std::max<int64_t>(1, x.max_blocked_clients() / n);
  }
}

ExtractionDetector::~ExtractionDetector() = default;

ExtractionDetector::Shard& ExtractionDetector::shard_for(const std::string& client) const {
  return *shards_[mix(std::hash<std::string>{}(client) ^ options_.key()) % shards_.size()];
}

std::vector<uint8_t> ExtractionDetector::view(const float* x, Shape shape) const {
  return detail::pooled_cells(x, shape, options_.grid(), options_.lo(), options_.hi(), "extraction");
}

namespace {

// Smallest squared L2 distance from v to a member of the set (members of another size are skipped:
// a model's input shape is fixed, so they do not occur). -1 when none compares.
int64_t nearest(const ClassSet& set, const std::vector<uint8_t>& v) {
  int64_t best = -1;
  for (const auto& m : set.members) {
    if (m.size() != v.size()) continue;
    int64_t sum = 0;
    for (size_t i = 0; i < v.size(); ++i) {
      const int64_t d = static_cast<int64_t>(v[i]) - m[i];
      sum += d * d;
      if (best >= 0 && sum >= best) break;
    }
    if (best < 0 || sum < best) best = sum;
  }
  return best;
}

// mean - sd of the admitting distances (PRADA's threshold update rule).
double mean_minus_sd(const std::deque<double>& d) {
  double mean = 0;
  for (double v : d) mean += v;
  mean /= static_cast<double>(d.size());
  double var = 0;
  for (double v : d) var += (v - mean) * (v - mean);
  return mean - std::sqrt(var / static_cast<double>(d.size()));
}

// PRADA's test on D: values beyond 3 sd of the mean set aside, then W (-1 when under 3 remain or
// they are all equal, which Shapiro-Wilk cannot test and no natural stream produces: W = 0 then).
double prada_w(const std::deque<double>& d) {
  double mean = 0;
  for (double v : d) mean += v;
  mean /= static_cast<double>(d.size());
  double var = 0;
  for (double v : d) var += (v - mean) * (v - mean);
  const double sd = std::sqrt(var / static_cast<double>(d.size()));
  thread_local std::vector<double> kept;
  kept.clear();
  for (double v : d) {
    if (std::fabs(v - mean) <= 3 * sd) kept.push_back(v);
  }
  if (kept.size() < 3) return -1;
  if (*std::max_element(kept.begin(), kept.end()) - *std::min_element(kept.begin(), kept.end()) <= 0) return 0;
  return shapiro_wilk(kept).w;
}

size_t client_bytes(const std::unordered_map<int64_t, ClassSet>& classes, size_t distances, size_t answers) {
  size_t bytes = kClientBytes + distances * sizeof(double) + answers;
  for (const auto& [c, set] : classes) {
    bytes += kClassBytes;
    for (const auto& m : set.members) bytes += kViewOverhead + sizeof(double) + m.capacity();
  }
  return bytes;
}

}  // namespace

ExtractionVerdict ExtractionDetector::observe_locked(Shard& shard, const std::string& client, std::vector<uint8_t> v,
                                                     int64_t cls, double top_probability, double now_s) {
  const ExtractionOptions& o = options_;
  ++shard.queries;
  auto it = shard.clients.find(client);
  if (it == shard.clients.end()) {
    if (static_cast<int64_t>(shard.clients.size()) >= shard.capacity) {
      shard.clients.erase(shard.lru.front());
      shard.lru.pop_front();
    }
    it = shard.clients.emplace(client, Client{}).first;
    it->second.lru = shard.lru.insert(shard.lru.end(), client);
  } else {
    shard.lru.splice(shard.lru.end(), shard.lru, it->second.lru);
  }
  Client& c = it->second;
  c.last_s = now_s;
  ++c.queries;
  ExtractionVerdict r;
  const bool was_flagged = c.flagged_until > now_s;

  // PRADA: the distance to G_c, D, and G_c's growth.
  if (o.delta() > 0) {
    ClassSet& set = c.classes[cls];
    const int64_t d2 = nearest(set, v);
    const double scale = (o.hi() - o.lo()) / 255.0;
    if (d2 < 0) {  // the class's first query
      set.members.push_back(std::move(v));
      set.admitted.push_back(0);
      c.order.push_back(cls);
    } else {
      r.distance = std::sqrt(static_cast<double>(d2)) * scale;
      c.distances.push_back(r.distance);
      if (static_cast<int>(c.distances.size()) > o.window()) c.distances.pop_front();
      if (r.distance > set.threshold) {
        set.members.push_back(std::move(v));
        set.admitted.push_back(r.distance);
        c.order.push_back(cls);
        set.threshold = std::max(set.threshold, mean_minus_sd(set.admitted));
      }
    }
    while (static_cast<int64_t>(c.order.size()) > o.max_set()) {  // the client's oldest member goes
      const auto old = c.classes.find(c.order.front());
      old->second.members.pop_front();
      old->second.admitted.pop_front();
      if (old->second.members.empty()) c.classes.erase(old);  // so sets <= members <= max_set
      c.order.pop_front();
    }
    r.distances = static_cast<int64_t>(c.distances.size());
    if (r.distances >= o.min_distances()) {
      r.w = prada_w(c.distances);
      r.prada = r.w >= 0 && r.w < o.delta();
    }
  }
  // The answers: the share below `confidence` in the window.
  if (o.max_unsure_share() < 1) {
    const uint8_t u = top_probability < o.confidence() ? 1 : 0;
    c.unsure.push_back(u);
    c.unsure_count += u;
    if (static_cast<int>(c.unsure.size()) > o.answer_window()) {
      c.unsure_count -= c.unsure.front();
      c.unsure.pop_front();
    }
    if (static_cast<int>(c.unsure.size()) >= o.min_answers()) {
      r.unsure_share = static_cast<double>(c.unsure_count) / static_cast<double>(c.unsure.size());
      r.unsure = r.unsure_share > o.max_unsure_share();
    }
  }
  c.last_w = r.w;
  c.last_share = r.unsure_share;
  c.last_prada = r.prada;
  c.last_unsure = r.unsure;
  if (r.prada || r.unsure) c.flagged_until = now_s + o.block_s();
  r.flagged = c.flagged_until > now_s;
  r.newly_flagged = r.flagged && !was_flagged;
  r.client_queries = c.queries;

  auto& enforced = shard.blocks[client];  // a zero entry is dropped below when nothing applies
  if ((r.prada || r.unsure) && o.policy() != Policy::kFlag) {
    enforced.until_s = std::max(enforced.until_s, now_s + o.block_s());
    enforced.block = enforced.block || o.policy() == Policy::kBlock;
  }
  if (enforced.until_s <= now_s) {
    shard.blocks.erase(client);
  } else if (static_cast<int64_t>(shard.blocks.size()) > shard.block_capacity) {
    auto first = shard.blocks.end();
    for (auto b = shard.blocks.begin(); b != shard.blocks.end(); ++b) {
      if (b->first != client && (first == shard.blocks.end() || b->second.until_s < first->second.until_s)) first = b;
    }
    if (first != shard.blocks.end()) shard.blocks.erase(first);
  }
  const auto b = shard.blocks.find(client);
  const bool active = b != shard.blocks.end() && b->second.until_s > now_s;
  r.blocked = active && b->second.block;
  r.throttled = active && !b->second.block;
  return r;
}

std::vector<ExtractionVerdict> ExtractionDetector::observe_rows(const std::string& client, const float* x, int64_t n,
                                                                Shape shape, const float* logits, int64_t classes,
                                                                double now_s) {
  if (n <= 0) return {};
  if (logits == nullptr || classes <= 0) throw invalid_argument("extraction: an answer needs at least one class");
  const int64_t d = shape.size();
  std::vector<std::vector<uint8_t>> views(static_cast<size_t>(n));
  std::vector<int64_t> cls(static_cast<size_t>(n));
  std::vector<double> top(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {  // outside the lock: the views and the softmax in plain loops
    if (options_.delta() > 0) views[i] = view(x + i * d, shape);
    const float* row = logits + i * classes;
    const int64_t k = std::max_element(row, row + classes) - row;
    double sum = 0;
    for (int64_t j = 0; j < classes; ++j) sum += std::exp(static_cast<double>(row[j]) - row[k]);
    cls[i] = k;
    top[i] = std::isfinite(sum) ? 1.0 / sum : 0.0;  // NaN logits: an unsure answer
  }
  Shard& shard = shard_for(client);
  std::lock_guard<std::mutex> lock(shard.mu);
  std::vector<ExtractionVerdict> out;
  out.reserve(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) out.push_back(observe_locked(shard, client, std::move(views[i]), cls[i], top[i], now_s));
  return out;
}

ExtractionDetector::ClientState ExtractionDetector::state(const std::string& client, double now_s) const {
  const ExtractionOptions& o = options_;
  Shard& shard = shard_for(client);
  std::lock_guard<std::mutex> lock(shard.mu);
  ClientState s;
  const auto b = shard.blocks.find(client);
  const double until = b != shard.blocks.end() ? b->second.until_s : 0;
  const auto it = shard.clients.find(client);
  s.flagged = it != shard.clients.end() && it->second.flagged_until > now_s;
  const bool active = o.policy() != Policy::kFlag && until > now_s;
  s.blocked = active && b->second.block;
  s.throttled = active && !b->second.block;
  if (active) s.until_s = until;
  if (active || s.flagged) {
    char buf[320];
    if (it != shard.clients.end() && it->second.last_prada) {
      std::snprintf(buf, sizeof buf,
                    "extraction detector (PRADA): the distances between this client's queries are not those of "
                    "natural data (Shapiro-Wilk W %.3f < %.3f), the pattern of model extraction",
                    it->second.last_w, o.delta());
    } else {
      std::snprintf(buf, sizeof buf,
                    "extraction detector (unsure answers): the model was unsure (top probability < %.2f) of more "
                    "than %.0f %% of this client's recent queries, the pattern of model extraction with "
                    "out-of-distribution queries",
                    o.confidence(), 100 * o.max_unsure_share());
    }
    s.reason = buf;
    if (active) {
      std::snprintf(buf, sizeof buf, "; %s for another %.0f s", s.blocked ? "blocked" : "throttled",
                    std::ceil(until - now_s));
      s.reason += buf;
    }
  }
  return s;
}

void ExtractionDetector::prune(double now_s) {
  for (auto& shard : shards_) {
    std::lock_guard<std::mutex> lock(shard->mu);
    for (auto b = shard->blocks.begin(); b != shard->blocks.end();) b = b->second.until_s > now_s ? std::next(b) : shard->blocks.erase(b);
    for (auto it = shard->clients.begin(); it != shard->clients.end();) {
      if (it->second.last_s > now_s - options_.max_age_s() || it->second.flagged_until > now_s) {
        ++it;
      } else {
        shard->lru.erase(it->second.lru);
        it = shard->clients.erase(it);
      }
    }
  }
}

ExtractionDetector::Stats ExtractionDetector::stats(double now_s) const {
  Stats s;
  for (const auto& shard : shards_) {
    std::lock_guard<std::mutex> lock(shard->mu);
    s.queries += shard->queries;
    s.clients += static_cast<int64_t>(shard->clients.size());
    for (const auto& [name, c] : shard->clients) {
      s.flagged_clients += c.flagged_until > now_s ? 1 : 0;
      s.stored_views += static_cast<int64_t>(c.order.size());
      s.memory_bytes += client_bytes(c.classes, c.distances.size(), c.unsure.size());
    }
    for (const auto& [name, e] : shard->blocks) {
      const bool active = e.until_s > now_s;
      s.throttled_clients += active && !e.block ? 1 : 0;
      s.blocked_clients += active && e.block ? 1 : 0;
      s.memory_bytes += kClientBytes / 8;
    }
  }
  s.memory_cap_bytes = memory_cap_bytes();
  return s;
}

nlohmann::json ExtractionDetector::Stats::to_json() const {
  return {{"clients", clients},
          {"queries", queries},
          {"flagged_clients", flagged_clients},
          {"throttled_clients", throttled_clients},
          {"blocked_clients", blocked_clients},
          {"stored_views", stored_views},
          {"memory_bytes", memory_bytes},
          {"memory_cap_bytes", memory_cap_bytes}};
}

size_t ExtractionDetector::client_cap_bytes() const {
  const size_t g = static_cast<size_t>(options_.grid());
  const size_t view_bytes = kViewOverhead + sizeof(double) + 3 * g * g;
  // A class's set goes when its last member does: sets <= members <= max_set.
  return kClientBytes + static_cast<size_t>(options_.max_set()) * (view_bytes + kClassBytes) +
         static_cast<size_t>(options_.window()) * sizeof(double) + static_cast<size_t>(options_.answer_window());
}

size_t ExtractionDetector::memory_cap_bytes() const {
  return static_cast<size_t>(options_.max_clients()) * client_cap_bytes() +
         static_cast<size_t>(options_.max_blocked_clients()) * (kClientBytes / 8);
}

}  // namespace bulwark::detect
