#include "detect/stateful.h"

#include "detect/detail/cells.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <deque>
#include <functional>
#include <list>
#include <mutex>
#include <random>
#include <unordered_map>

#include "core/error.h"

namespace bulwark::detect {
namespace {

// Murmur3's 64-bit finaliser: a bijection with full avalanche.
uint64_t mix(uint64_t h) {
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdULL;
  h ^= h >> 33;
  h *= 0xc4ceb9fe1a85ec53ULL;
  h ^= h >> 33;
  return h;
}

uint64_t hash_window(const uint8_t* p, int len, uint64_t key) {
  uint64_t h = key ^ (static_cast<uint64_t>(len) * 0x9e3779b97f4a7c15ULL);
  int j = 0;
  for (; j + 8 <= len; j += 8) {
    uint64_t word;
    std::memcpy(&word, p + j, 8);
    h = mix(h ^ word);
  }
  if (j < len) {
    uint64_t word = 0;
    std::memcpy(&word, p + j, static_cast<size_t>(len - j));
    h = mix(h ^ word ^ 0x8000000000000000ULL);
  }
  return mix(h);
}

// Bits needed to hold 0..max_value.
int bits_for(int max_value) {
  int bits = 1;
  while ((1 << bits) <= max_value) ++bits;
  return bits;
}

// Keeps the top_k largest distinct values, largest first.
void keep_top_distinct(std::vector<uint64_t>& h, size_t top_k) {
  std::sort(h.begin(), h.end(), std::greater<>());
  h.erase(std::unique(h.begin(), h.end()), h.end());
  if (h.size() > top_k) h.resize(top_k);
}

// Appends the hashes >= cutoff of each window of `len` values, `stride` apart, to `out` (cleared).
void hash_windows(const uint8_t* q, int64_t d, int64_t len, int64_t stride, int max_bucket, uint64_t key,
                  uint64_t cutoff, std::vector<uint64_t>& out) {
  out.clear();
  const int bits = bits_for(max_bucket);
  if (len * bits > 64) {
    for (int64_t start = 0; start + len <= d; start += stride) {
      const uint64_t h = hash_window(q + start, static_cast<int>(len), key);
      if (h >= cutoff) out.push_back(h);
    }
    return;
  }
  // The default (20 values of 3 bits) packs a window exactly into one word, rolled one value at a
  // time: distinct windows get distinct hashes, and each costs two mix() calls.
  const uint64_t mask = len * bits == 64 ? ~0ULL : (1ULL << (len * bits)) - 1;
  uint64_t word = 0;
  for (int64_t i = 0, end = len; end <= d; ++i) {
    word = ((word << bits) | q[i]) & mask;
    if (i + 1 == end) {  // the window [end - len, end) is complete
      const uint64_t h = mix(mix(word ^ key) + key);
      if (h >= cutoff) out.push_back(h);
      end += stride;
    }
  }
}

// Each stored hash links to the previous query of the same client holding it, so the index needs
// one map entry per distinct hash (the newest holder) instead of a list per hash.
struct Slot {
  uint64_t hash;
  uint64_t prev;  // seq of the previous holder; dead once below the oldest stored seq
};
struct Entry {
  uint64_t seq;
  double t;
  std::vector<Slot> slots;     // largest hash first, as fingerprint() returns them
  std::vector<uint8_t> cells;  // the distance test's view (empty when the test is off)
  uint64_t prev_of(uint64_t h) const {
    auto it = std::lower_bound(slots.begin(), slots.end(), h, [](const Slot& s, uint64_t v) { return s.hash > v; });
    return it != slots.end() && it->hash == h ? it->prev : 0;
  }
};

// How many holders of one hash a match looks back through: counts are exact against the most
// recent kMaxChain holders, which bounds a query's cost when an attack has chained thousands.
constexpr int kMaxChain = 32;
// Estimates for bytes_per_query(): an unordered_map<uint64_t, uint64_t> node (next pointer, key,
// value) rounded up to malloc's 32-byte chunk; buckets at up to 2 per entry after a rehash; 16
// bytes of malloc header per vector block; a client's fixed share (deque block and map, LRU node,
// hash table, a name of up to 64 bytes kept twice).
constexpr size_t kNodeBytes = 32, kBucketBytes = 16, kMallocBytes = 16, kClientBytes = 1024;

struct Client {
  std::deque<Entry> entries;                     // oldest first; seqs consecutive
  std::unordered_map<uint64_t, uint64_t> index;  // hash -> seq of its newest holder
  uint64_t next_seq = 1;                         // 0 means "no previous holder"
  std::deque<double> recent_hits;                // the last max(hits_to_flag, hits_to_block) hit times
  int64_t hits = 0;
  std::list<std::string>::iterator lru;  // position in Shard::lru
};

}  // namespace

// One query, prepared outside any lock.
struct StatefulDetector::Query {
  std::vector<uint64_t> fp;
  std::vector<uint8_t> cells;
};

struct StatefulDetector::Shard {
  mutable std::mutex mu;
  std::unordered_map<std::string, Client> clients;
  std::list<std::string> lru;  // least recently active first
  int64_t capacity = 0;
  int64_t queries = 0, hits = 0;
  // Throttles and blocks in force, kept apart from `clients`: evicting a client's history (LRU,
  // which other identities can force) never lifts its block. Bounded by block_capacity; when full
  // the block that ends first goes.
  struct Enforcement {
    double until_s = 0;
    bool block = false;  // else a throttle
  };
  std::unordered_map<std::string, Enforcement> blocks;
  int64_t block_capacity = 0;
};

// ---- detector ----

StatefulDetector::StatefulDetector(StatefulOptions o) : options_(std::move(o)) {
  if (options_.match_threshold() > options_.top_k()) {
    throw invalid_argument("stateful.match_threshold (" + std::to_string(options_.match_threshold()) +
                           ") must be <= stateful.top_k (" + std::to_string(options_.top_k()) + ")");
  }
  if (!(options_.lo() < options_.hi())) throw invalid_argument("stateful.lo must be < stateful.hi");
  if (options_.policy() == Policy::kEscalate && options_.hits_to_block() <= options_.hits_to_flag()) {
    throw invalid_argument("stateful.hits_to_block (" + std::to_string(options_.hits_to_block()) +
                           ") must be above stateful.hits_to_flag (" + std::to_string(options_.hits_to_flag()) +
                           ") with policy escalate");
  }
  while (options_.key() == 0) {
    std::random_device rd;
    options_.key((static_cast<uint64_t>(rd()) << 32) ^ rd());
  }
  // Split max_clients exactly over the shards; fewer shards than clients would leave some empty.
  const int64_t n = std::min<int64_t>(options_.shards(), options_.max_clients());
  for (int64_t i = 0; i < n; ++i) {
    shards_.push_back(std::make_unique<Shard>());
    shards_.back()->capacity = options_.max_clients() / n + (i < options_.max_clients() % n ? 1 : 0);
    shards_.back()->block_capacity = std::max<int64_t>(1, options_.max_blocked_clients() / n);
  }
}

StatefulDetector::~StatefulDetector() = default;

StatefulDetector::Shard& StatefulDetector::shard_for(const std::string& client) const {
  return *shards_[mix(std::hash<std::string>{}(client) ^ options_.key()) % shards_.size()];
}

std::vector<uint64_t> StatefulDetector::fingerprint(const float* x, int64_t d) const {
  if (x == nullptr || d <= 0) throw invalid_argument("stateful: a query needs at least one value");
  // Reused per thread: observe() runs on request threads, and this is its only allocation-heavy part.
  thread_local std::vector<uint8_t> q;
  thread_local std::vector<uint64_t> h;
  q.resize(static_cast<size_t>(d));
  const uint64_t key = options_.key();
  const int step = options_.quant_step();
  // (v * 255 + salt) mod 255 as in Blacklight, but with one salt for all values (see the header).
  const double salt = static_cast<double>(mix(key) >> 11) * 0x1p-53 * 255.0;
  const double scale = 255.0 / (options_.hi() - options_.lo()), inv_step = 1.0 / step;
  const int max_bucket = 254 / step;  // s < 255 below; the min() guards against rounding up
  for (int64_t i = 0; i < d; ++i) {
    double s = (x[i] - options_.lo()) * scale;
    s = (s >= 0 ? std::min(s, 255.0) : 0.0) + salt;  // the comparison also maps NaN to 0
    if (s >= 255.0) s -= 255.0;
    q[static_cast<size_t>(i)] = static_cast<uint8_t>(std::min(static_cast<int>(s * inv_step), max_bucket));
  }
  const int64_t len = std::min<int64_t>(options_.window(), d);
  const int64_t n = (d - len) / options_.stride() + 1;
  const int64_t k = options_.top_k();
  // Window hashes are uniform, so a cutoff that about 3k of the n pass leaves the sort in
  // keep_top_distinct() a fraction of the work. If fewer than k distinct pass (flat inputs repeat windows), redo
  // without it; otherwise nothing below the cutoff could have made the top k.
  uint64_t cutoff = n > 6 * k ? (~0ULL / static_cast<uint64_t>(n)) * static_cast<uint64_t>(n - 3 * k) : 0;
  for (;;) {
    hash_windows(q.data(), d, len, options_.stride(), max_bucket, key, cutoff, h);
    keep_top_distinct(h, static_cast<size_t>(k));
    if (static_cast<int64_t>(h.size()) >= k || cutoff == 0) break;
    cutoff = 0;
  }
  return h;
}

std::vector<uint8_t> StatefulDetector::cells(const float* x, Shape shape) const {
  return detail::pooled_cells(x, shape, options_.grid(), options_.lo(), options_.hi(), "stateful");
}

StatefulDetector::Query StatefulDetector::prepare(const float* x, Shape shape) const {
  Query q;
  q.fp = fingerprint(x, shape.size());
  if (options_.distance() > 0) q.cells = cells(x, shape);
  return q;
}

namespace {

void evict_oldest(Client& c) {
  const Entry& e = c.entries.front();
  for (const Slot& s : e.slots) {
    auto it = c.index.find(s.hash);
    if (it != c.index.end() && it->second == e.seq) c.index.erase(it);  // no newer holder
  }
  c.entries.pop_front();
}

void expire(Client& c, double now_s, double max_age_s) {
  while (!c.entries.empty() && c.entries.front().t < now_s - max_age_s) evict_oldest(c);
}

// The most hashes `fp` shares with any one stored query of the client.
int best_match(const Client& c, const std::vector<uint64_t>& fp) {
  if (c.entries.empty()) return 0;
  const uint64_t first = c.entries.front().seq;
  thread_local std::vector<uint64_t> seqs;
  seqs.clear();
  for (uint64_t h : fp) {
    auto it = c.index.find(h);
    uint64_t seq = it == c.index.end() ? 0 : it->second;
    for (int n = 0; n < kMaxChain && seq >= first; ++n) {  // first >= 1: seq 0 is "none"
      seqs.push_back(seq);
      seq = c.entries[seq - first].prev_of(h);
    }
  }
  std::sort(seqs.begin(), seqs.end());
  int best = 0;
  for (size_t i = 0, j = 0; i < seqs.size(); i = j) {
    while (j < seqs.size() && seqs[j] == seqs[i]) ++j;
    best = std::max(best, static_cast<int>(j - i));
  }
  return best;
}

// The smallest sum of squared cell differences to a stored query of the same size (-1: none).
int64_t nearest_cells(const Client& c, const std::vector<uint8_t>& cells) {
  if (cells.empty()) return -1;
  int64_t best = -1;
  for (const Entry& e : c.entries) {
    if (e.cells.size() != cells.size()) continue;
    int64_t sum = 0;
    for (size_t i = 0; i < cells.size(); ++i) {
      const int64_t diff = static_cast<int64_t>(cells[i]) - e.cells[i];
      sum += diff * diff;
      if (best >= 0 && sum >= best) break;  // this one cannot be nearer
    }
    if (best < 0 || sum < best) best = sum;
  }
  return best;
}

void store(Client& c, const std::vector<uint64_t>& fp, std::vector<uint8_t> cells, double now_s) {
  Entry e{c.next_seq++, now_s, {}, std::move(cells)};
  e.slots.reserve(fp.size());
  for (uint64_t h : fp) {
    auto [it, fresh] = c.index.try_emplace(h, e.seq);
    e.slots.push_back({h, fresh ? 0 : it->second});
    it->second = e.seq;
  }
  c.entries.push_back(std::move(e));
}

// Whether the client's last `hits` hits all fall within flag_window_s.
bool hits_within(const Client& c, const StatefulOptions& o, int hits, double now_s) {
  return static_cast<int>(c.recent_hits.size()) >= hits &&
         c.recent_hits[c.recent_hits.size() - static_cast<size_t>(hits)] > now_s - o.flag_window_s();
}

bool flagged_at(const Client& c, const StatefulOptions& o, double now_s) {
  return hits_within(c, o, o.hits_to_flag(), now_s);
}

size_t client_bytes(const Client& c) {
  size_t bytes = kClientBytes + c.index.size() * kNodeBytes + c.index.bucket_count() * sizeof(void*);
  for (const Entry& e : c.entries) {
    bytes += sizeof(Entry) + kMallocBytes + e.slots.capacity() * sizeof(Slot);
    if (e.cells.capacity() > 0) bytes += kMallocBytes + e.cells.capacity();
  }
  return bytes;
}

}  // namespace

QueryVerdict StatefulDetector::observe_locked(Shard& shard, const std::string& client, Query query, double now_s) {
  const StatefulOptions& o = options_;
  ++shard.queries;
  auto it = shard.clients.find(client);
  if (it == shard.clients.end()) {
    if (static_cast<int64_t>(shard.clients.size()) >= shard.capacity) {
      shard.clients.erase(shard.lru.front());  // the least recently active client of this shard
      shard.lru.pop_front();
    }
    it = shard.clients.emplace(client, Client{}).first;
    it->second.lru = shard.lru.insert(shard.lru.end(), client);
  } else {
    shard.lru.splice(shard.lru.end(), shard.lru, it->second.lru);
  }
  Client& c = it->second;
  expire(c, now_s, o.max_age_s());

  QueryVerdict v;
  v.shared = best_match(c, query.fp);
  const int64_t nearest = nearest_cells(c, query.cells);
  if (nearest >= 0) v.nearest = std::sqrt(static_cast<double>(nearest) / static_cast<double>(query.cells.size())) / 255.0;
  v.hit = v.shared >= o.match_threshold() || (v.nearest >= 0 && v.nearest < o.distance());
  const bool was_flagged = flagged_at(c, o, now_s);
  if (v.hit) {
    ++shard.hits;
    ++c.hits;
    c.recent_hits.push_back(now_s);
    if (static_cast<int>(c.recent_hits.size()) > std::max(o.hits_to_flag(), o.hits_to_block())) c.recent_hits.pop_front();
  }
  while (static_cast<int64_t>(c.entries.size()) >= o.max_queries_per_client()) evict_oldest(c);
  store(c, query.fp, std::move(query.cells), now_s);

  v.flagged = flagged_at(c, o, now_s);
  v.newly_flagged = v.flagged && !was_flagged;
  auto& enforced = shard.blocks[client];  // a zero entry is dropped below when nothing applies
  if (v.flagged && v.hit && o.policy() != Policy::kFlag) {
    // escalate: a throttle from hits_to_flag hits, a block from hits_to_block within the window.
    const bool block = o.policy() == Policy::kBlock ||
                       (o.policy() == Policy::kEscalate && hits_within(c, o, o.hits_to_block(), now_s));
    enforced.until_s = std::max(enforced.until_s, now_s + o.block_s());
    enforced.block = enforced.block || block;
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
  v.blocked = active && b->second.block;
  v.throttled = active && !b->second.block;
  v.client_hits = c.hits;
  return v;
}

QueryVerdict StatefulDetector::observe(const std::string& client, const float* x, Shape shape, double now_s) {
  Query q = prepare(x, shape);  // outside the lock: the costly part
  Shard& shard = shard_for(client);
  std::lock_guard<std::mutex> lock(shard.mu);
  return observe_locked(shard, client, std::move(q), now_s);
}

std::vector<QueryVerdict> StatefulDetector::observe_rows(const std::string& client, const float* x, int64_t n,
                                                         Shape shape, double now_s) {
  const int64_t d = shape.size();
  std::vector<Query> qs;
  qs.reserve(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) qs.push_back(prepare(x + i * d, shape));  // outside the lock
  Shard& shard = shard_for(client);
  std::lock_guard<std::mutex> lock(shard.mu);  // the whole request at once: no row of another slips between
  std::vector<QueryVerdict> out;
  out.reserve(qs.size());
  for (auto& q : qs) out.push_back(observe_locked(shard, client, std::move(q), now_s));
  return out;
}

StatefulDetector::ClientState StatefulDetector::state(const std::string& client, double now_s) const {
  const StatefulOptions& o = options_;
  Shard& shard = shard_for(client);
  std::lock_guard<std::mutex> lock(shard.mu);
  ClientState s;
  const auto b = shard.blocks.find(client);
  const double until = b != shard.blocks.end() ? b->second.until_s : 0;
  auto it = shard.clients.find(client);
  s.flagged = it != shard.clients.end() && flagged_at(it->second, o, now_s);
  const bool active = o.policy() != Policy::kFlag && until > now_s;
  s.blocked = active && b->second.block;
  s.throttled = active && !b->second.block;
  if (active) s.until_s = until;
  if (active || s.flagged) {
    char buf[256];
    std::snprintf(buf, sizeof buf,
                  "stateful detector (query similarity): %d queries within %.0f s nearly duplicated "
                  "earlier ones, the pattern of a query-based black-box attack",
                  o.hits_to_flag(), o.flag_window_s());
    s.reason = buf;
    if (active) {
      std::snprintf(buf, sizeof buf, "; %s for another %.0f s", s.blocked ? "blocked" : "throttled",
                    std::ceil(until - now_s));
      s.reason += buf;
    }
  }
  return s;
}

void StatefulDetector::prune(double now_s) {
  for (auto& shard : shards_) {
    std::lock_guard<std::mutex> lock(shard->mu);
    for (auto b = shard->blocks.begin(); b != shard->blocks.end();) b = b->second.until_s > now_s ? std::next(b) : shard->blocks.erase(b);
    for (auto it = shard->clients.begin(); it != shard->clients.end();) {
      Client& c = it->second;
      expire(c, now_s, options_.max_age_s());
      const bool keep = !c.entries.empty() ||
                        (!c.recent_hits.empty() && c.recent_hits.back() > now_s - options_.flag_window_s());
      if (keep) {
        ++it;
      } else {
        shard->lru.erase(c.lru);
        it = shard->clients.erase(it);
      }
    }
  }
}

StatefulDetector::Stats StatefulDetector::stats(double now_s) const {
  Stats s;
  for (const auto& shard : shards_) {
    std::lock_guard<std::mutex> lock(shard->mu);
    s.queries += shard->queries;
    s.hits += shard->hits;
    s.clients += static_cast<int64_t>(shard->clients.size());
    for (const auto& [name, c] : shard->clients) {
      s.stored_queries += static_cast<int64_t>(c.entries.size());
      s.flagged_clients += flagged_at(c, options_, now_s) ? 1 : 0;
      s.memory_bytes += client_bytes(c);
    }
    for (const auto& [name, e] : shard->blocks) {
      const bool active = e.until_s > now_s;
      s.throttled_clients += active && !e.block ? 1 : 0;
      s.blocked_clients += active && e.block ? 1 : 0;
      s.memory_bytes += kClientBytes / 8;
    }
  }
  s.memory_cap_bytes = memory_cap_bytes();
  s.bytes_per_query = bytes_per_query();
  return s;
}

nlohmann::json StatefulDetector::Stats::to_json() const {
  return {{"clients", clients},
          {"stored_queries", stored_queries},
          {"queries", queries},
          {"hits", hits},
          {"flagged_clients", flagged_clients},
          {"throttled_clients", throttled_clients},
          {"blocked_clients", blocked_clients},
          {"memory_bytes", memory_bytes},
          {"memory_cap_bytes", memory_cap_bytes},
          {"bytes_per_query", bytes_per_query}};
}

size_t StatefulDetector::bytes_per_query() const {
  const size_t k = static_cast<size_t>(options_.top_k());
  const size_t cells = options_.distance() > 0 ? kMallocBytes + 3 * static_cast<size_t>(options_.grid() * options_.grid()) : 0;
  return sizeof(Entry) + kMallocBytes + k * (sizeof(Slot) + kNodeBytes + kBucketBytes) + cells;
}

size_t StatefulDetector::memory_cap_bytes() const {
  return static_cast<size_t>(options_.max_clients()) *
         (static_cast<size_t>(options_.max_queries_per_client()) * bytes_per_query() + kClientBytes);
}

}  // namespace bulwark::detect
