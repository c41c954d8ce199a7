// detect/stateful.h — per-client stateful detection of query-based black-box attacks (Square,
// NES, HSJA, Boundary). Such attacks optimise by sending long chains of near-identical inputs,
// which benign clients rarely do. Each query gets a Blacklight fingerprint (Li et al., USENIX
// Security 2022): quantise the values, hash every window of `window` consecutive values, keep the
// `top_k` largest distinct hashes; two queries sharing >= match_threshold hashes are near-duplicates.
// As in Chen, Carlini & Wagner (2019, "Stateful detection of black-box adversarial attacks"),
// history is kept per client (token id, or peer address when auth is off): a query is compared
// only with its own client's queries, so one client never flags another and memory has a quota.
//
// Hashing: a hand-written keyed 64-bit hash, not SHA-256 as in the Blacklight release. SHA-256
// costs ~1 us per window (765 windows per 28x28 query); here the default window (20 values of 3
// bits) packs exactly into one word, rolled along the input, and is mixed twice with Murmur3's
// fmix64 (longer windows hash 8 values per fmix64). Collision resistance matters little (a
// collision would only make an attacker's own queries match); what matters is that the attacker
// cannot predict WHICH windows land in the top_k, or it could perturb exactly those. So the hash,
// the quantisation offset (Blacklight's secret salt, hiding where the bucket edges are) and the
// client-to-shard map all derive from a secret 64-bit key, drawn from std::random_device unless
// set. That is the one default here that is not deterministic, on purpose: a default key anyone
// can read in this file would let an attacker compute fingerprints offline.
//
// Unlike Blacklight, the salt is one offset for all values, not one per pixel: on the 10,000
// Fashion-MNIST test images sent by one client, a per-pixel salt made 13 % of these distinct images
// "hit" an earlier one (black backgrounds at the same positions give the same windows everywhere),
// one offset none (3 keys tried).
//
// Matching follows, for each hash of a query, the client's stored queries holding it, newest first
// and at most 32 of them (an index keeps the newest holder; each stored hash links to the previous
// one). A stored query more than 32 holders back on some hash is not credited with that hash: the
// near-duplicates attacks make are recent, and a query's cost stays bounded however long the chain.
//
// A second, noise-robust test runs beside the fingerprints (Chen, Carlini & Wagner's k-NN distance,
// with k = 1, in a fixed low-resolution view instead of a trained encoder): each query is reduced to
// the means of a grid x grid partition of every channel (torch's adaptive_avg_pool2d, on the 0..255
// scale, one byte a cell), and a query whose root-mean-square distance to one of the client's stored
// queries is below `distance` is a hit too. The fingerprints need whole windows of 20 values to land
// in the same buckets, so U(-0.04, 0.04) noise added to every query breaks them (a value crosses a
// bucket edge with ~14 % probability, a window survives with ~5 %); averaging 2 x 2 cells divides the
// noise by 2 while a Square step, which moves a square of pixels by 2 eps, stays. Measured on
// Fashion-MNIST with grid 14 (bench/stateful_evasion, docs/BENCHMARKS.md): distinct test images are
// never closer than 0.030 to any of the 1,000 before them, consecutive noise-padded Square queries
// are within 0.025 in ~97 % of steps. Noise correlated over whole cells is not averaged away: an
// attacker who knows the grid can pad with it (stated limit 5).
//
// Stated limits: (1) an attack spread over many identities, one query each, is not seen (per-client
// attribution is the price of never flagging one client for another's queries); (2) an attacker
// with many identities can evict the history of the least-recently-active clients once max_clients
// is reached (LRU within a shard; shards are chosen by the keyed hash, so it cannot aim at one),
// but not lift a block or throttle in force: those live in their own bounded table; (3) an attacker who moves most values across a bucket boundary on every query avoids matches,
// at the price of a far less efficient attack; (4) a client re-sending the same image is a hit,
// like an attack step: hits_to_flag > 1 leaves room for retries; (5) the distance test is unkeyed:
// noise constant over grid cells, of RMS above `distance`, evades it (at the price of that much
// noise in the attack's queries).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace bulwark::detect {

// The layout of one query's values: channels x height x width, row-major (a flat vector is 1 x 1 x d).
struct Shape {
  int64_t channels = 1, height = 1, width = 1;
  int64_t size() const { return channels * height * width; }
};

// What happens to a flagged client. The detector only reports the state; the server enforces it.
enum class Policy {
  kFlag,      // report (metrics, logs) only
  kThrottle,  // the server cuts the client's rate for block_s
  kBlock,     // the server refuses the client's requests for block_s
  kEscalate,  // throttle from hits_to_flag hits, block from hits_to_block: room for benign repeats
              // (a static camera's frames), while a query attack, a hit on nearly every query, is
              // slowed at once and refused soon after
};
// "flag" | "throttle" | "block" | "escalate"; errors name stateful.policy.
Policy parse_policy(const std::string& s);
std::string to_string(Policy p);

// StatefulOptions().window(20).top_k(50).policy(Policy::kBlock). Setters throw invalid_argument
// naming the config key (stateful.*); cross-field checks (match_threshold <= top_k, lo < hi) run
// when the detector is built. The fingerprint defaults are Blacklight's CIFAR-10 setting as released
// (quantisation step 50 on 0..255, window 20, stride 1, 50 hashes kept, threshold 25; ImageNet
// uses window 50); on 28x28 inputs they flag Square-like streams within 3-7 queries (tests).
class StatefulOptions {
 public:
  StatefulOptions& quant_step(int v);                  // 1..255, on the 0..255 scale
  StatefulOptions& window(int v);                      // 1..4096 values per hashed window
  StatefulOptions& stride(int v);                      // 1..4096
  StatefulOptions& top_k(int v);                       // 1..1024 hashes kept per query
  StatefulOptions& match_threshold(int v);             // 1..top_k shared hashes make a match
  StatefulOptions& max_queries_per_client(int64_t v);  // 1..10^7; a client's oldest go first
  StatefulOptions& max_clients(int64_t v);             // 1..10^7; least recently active go first
  StatefulOptions& max_age_s(double v);                // > 0; older queries are forgotten
  StatefulOptions& hits_to_flag(int v);                // 1..1000 hits ...
  StatefulOptions& flag_window_s(double v);            // ... within this many seconds flag a client
  StatefulOptions& hits_to_block(int v);               // 1..1000: escalate blocks from this many hits in the window
  StatefulOptions& policy(Policy v);
  StatefulOptions& block_s(double v);  // > 0; how long a throttle or block lasts
  StatefulOptions& lo(double v);       // the input range, mapped onto 0..255
  StatefulOptions& hi(double v);
  StatefulOptions& grid(int v);        // 1..64 cells per side of the distance test's view (a flat input: grid^2 cells)
  StatefulOptions& distance(double v);  // 0..1 RMS distance on the lo..hi scale that makes a hit; 0 turns the test off
  StatefulOptions& max_blocked_clients(int64_t v);  // 1..10^7 blocks/throttles in force, kept apart from history
  StatefulOptions& shards(int v);    // 1..256 independently locked client tables
  StatefulOptions& key(uint64_t v);  // secret; 0 = draw one when built

  int quant_step() const { return quant_step_; }
  int window() const { return window_; }
  int stride() const { return stride_; }
  int top_k() const { return top_k_; }
  int match_threshold() const { return match_threshold_; }
  int64_t max_queries_per_client() const { return max_queries_per_client_; }
  int64_t max_clients() const { return max_clients_; }
  double max_age_s() const { return max_age_s_; }
  int hits_to_flag() const { return hits_to_flag_; }
  double flag_window_s() const { return flag_window_s_; }
  int hits_to_block() const { return hits_to_block_; }
  Policy policy() const { return policy_; }
  double block_s() const { return block_s_; }
  double lo() const { return lo_; }
  double hi() const { return hi_; }
  int64_t max_blocked_clients() const { return max_blocked_clients_; }
  int grid() const { return grid_; }
  double distance() const { return distance_; }
  int shards() const { return shards_; }
  uint64_t key() const { return key_; }

  // Everything but the key, which must not reach logs or reports.
  nlohmann::json to_json() const;

 private:
  int quant_step_ = 50;
  int window_ = 20;
  int stride_ = 1;
  int top_k_ = 50;
  int match_threshold_ = 25;
  // 1000 x 256 x ~3.3 KB = ~0.83 GB worst case (see memory_cap_bytes()). An attack is flagged
  // within a few queries; the quota only decides how many decoys a slow attacker must interleave.
  int64_t max_queries_per_client_ = 1000;
  int64_t max_clients_ = 256;
  double max_age_s_ = 3600;
  // Blacklight flags at the first match; 3 hits leave room for a client retrying one image twice,
  // while Square or NES produce a hit on nearly every query and are flagged within a few.
  int hits_to_flag_ = 3;
  double flag_window_s_ = 3600;
  int hits_to_block_ = 10;
  Policy policy_ = Policy::kFlag;
  double block_s_ = 600;
  double lo_ = 0.0;
  double hi_ = 1.0;
  int64_t max_blocked_clients_ = 65536;
  // Fashion-MNIST's 28 x 28 as 14 x 14 cells of 2 x 2; 0.025 lies between the closest pair of distinct
  // test images (0.030) and noise-padded Square's steps (median 0.015): see the header comment.
  int grid_ = 14;
  double distance_ = 0.025;
  int shards_ = 16;
  uint64_t key_ = 0;
};

// The outcome of one observed query, after it was stored.
struct QueryVerdict {
  bool hit = false;            // shares >= match_threshold hashes with, or lies within distance of, a stored query
  int shared = 0;              // the most hashes shared with any one stored query
  double nearest = -1;         // the RMS distance to the nearest stored query (-1: none stored, or the test is off)
  bool flagged = false;        // >= hits_to_flag hits within flag_window_s, this one included
  bool newly_flagged = false;  // flagged now, not before this query
  bool blocked = false;        // policy kBlock (or kEscalate past hits_to_block) and inside block_s of the last flagging hit
  bool throttled = false;      // policy kThrottle (or kEscalate below hits_to_block), likewise
  int64_t client_hits = 0;     // hits of this client since it was first seen (or re-admitted)
};

// Thread-safety: observe(), state(), prune() and stats() may be called from any thread at once.
// Clients live in shards(), each behind its own mutex; fingerprinting runs before any lock is taken.
class StatefulDetector {
 public:
  explicit StatefulDetector(StatefulOptions o);
  ~StatefulDetector();
  StatefulDetector(const StatefulDetector&) = delete;
  StatefulDetector& operator=(const StatefulDetector&) = delete;

  // One query of d values (row-major), observed at now_s (seconds, any fixed origin; callers pass
  // the time so tests and simulations are deterministic). Matches it against the client's history,
  // then stores it, hit or not, so a chain of near-duplicates keeps matching.
  QueryVerdict observe(const std::string& client, const float* x, Shape shape, double now_s);
  // The n rows of one request (n x shape.size() values), observed as one step under the client's
  // lock: no query of a concurrent request of the same client lands between them. One verdict per row.
  std::vector<QueryVerdict> observe_rows(const std::string& client, const float* x, int64_t n, Shape shape,
                                         double now_s);

  // Before running the model: whether the server should refuse or slow this client, and why.
  struct ClientState {
    bool flagged = false;
    bool blocked = false;
    bool throttled = false;
    double until_s = 0;  // when the block or throttle ends (0 when neither)
    std::string reason;  // names the detector and the evidence; empty when nothing applies
  };
  ClientState state(const std::string& client, double now_s) const;

  // Drops queries older than max_age_s and clients left with nothing worth keeping. observe() also
  // drops its own client's old queries; call this now and then to free idle clients' memory.
  void prune(double now_s);

  struct Stats {
    int64_t clients = 0, stored_queries = 0, queries = 0, hits = 0;
    int64_t flagged_clients = 0, throttled_clients = 0, blocked_clients = 0;
    size_t memory_bytes = 0, memory_cap_bytes = 0, bytes_per_query = 0;
    nlohmann::json to_json() const;
  };
  Stats stats(double now_s) const;

  // The fingerprint of one query: min(top_k, distinct windows) distinct hashes, largest first.
  std::vector<uint64_t> fingerprint(const float* x, int64_t d) const;
  // The distance test's view of one query: the cell means on 0..255, channel by channel (at most 3
  // channel groups, each at most grid x grid cells; a flat input at most grid^2 cells).
  std::vector<uint8_t> cells(const float* x, Shape shape) const;

  // An estimate, not a measurement: what one stored query costs in the worst case (every hash
  // new to the client's index, 3 x grid^2 cells) with libstdc++'s containers and malloc's per-block overhead.
  size_t bytes_per_query() const;
  // max_clients x (max_queries_per_client x bytes_per_query() + a fixed per-client estimate).
  size_t memory_cap_bytes() const;
  const StatefulOptions& options() const { return options_; }

 private:
  struct Shard;
  struct Query;
  Query prepare(const float* x, Shape shape) const;
  Shard& shard_for(const std::string& client) const;
  QueryVerdict observe_locked(Shard& shard, const std::string& client, Query q, double now_s);

  StatefulOptions options_;  // key() holds the drawn key when none was set
  std::vector<std::unique_ptr<Shard>> shards_;
};

}  // namespace bulwark::detect
