#include "detect/stateful.h"

#include <gtest/gtest.h>
#include <zlib.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <random>
#include <thread>

#include "core/error.h"

namespace bulwark::detect {
namespace {

constexpr int64_t kD = 784;  // 28 x 28, the Fashion-MNIST input size
constexpr Shape kImage{1, 28, 28};
constexpr uint64_t kKey = 0x5eed;

std::vector<float> random_image(std::mt19937& rng) {
  std::uniform_real_distribution<float> u(0, 1);
  std::vector<float> x(kD);
  for (float& v : x) v = u(rng);
  return x;
}

// A smooth random pattern: a few random 2-D sinusoids, scaled into [0, 1].
std::vector<float> smooth_image(std::mt19937& rng) {
  std::uniform_real_distribution<float> u(0, 1);
  float fx[3], fy[3], ph[3];
  for (int k = 0; k < 3; ++k) fx[k] = 0.5f * u(rng), fy[k] = 0.5f * u(rng), ph[k] = 6.28f * u(rng);
  std::vector<float> x(kD);
  for (int r = 0; r < 28; ++r) {
    for (int c = 0; c < 28; ++c) {
      float v = 0;
      for (int k = 0; k < 3; ++k) v += std::sin(fx[k] * r + fy[k] * c + ph[k]);
      x[r * 28 + c] = (v + 3) / 6;
    }
  }
  return x;
}

// The next query of a Square-like attack: a few pixels moved by +-0.1.
std::vector<float> nudge(std::vector<float> x, std::mt19937& rng, int pixels = 5) {
  for (int i = 0; i < pixels; ++i) {
    float& v = x[rng() % kD];
    v = std::clamp(v + ((rng() & 1) ? 0.1f : -0.1f), 0.0f, 1.0f);
  }
  return x;
}

int shared(const std::vector<uint64_t>& a, const std::vector<uint64_t>& b) {
  int n = 0;
  for (uint64_t h : a) n += std::count(b.begin(), b.end(), h) > 0;
  return n;
}

// The first n Fashion-MNIST test images in [0, 1], or none when the dataset is not installed
// (Debian's dataset-fashion-mnist).
std::vector<std::vector<float>> fashion_mnist_test(int n) {
  gzFile f = gzopen("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz", "rb");
  if (f == nullptr) return {};
  unsigned char header[16];
  std::vector<unsigned char> bytes(static_cast<size_t>(n) * kD);
  const bool ok = gzread(f, header, 16) == 16 && header[3] == 3 &&
                  gzread(f, bytes.data(), static_cast<unsigned>(bytes.size())) == static_cast<int>(bytes.size());
  gzclose(f);
  if (!ok) return {};
  std::vector<std::vector<float>> images(n, std::vector<float>(kD));
  for (size_t i = 0; i < bytes.size(); ++i) images[i / kD][i % kD] = bytes[i] / 255.0f;
  return images;
}

TEST(StatefulFingerprint, TinyCaseByHand) {
  // quant_step 1: a change of 0.5 always moves a value to another bucket.
  const auto opts = StatefulOptions().key(kKey).quant_step(1).window(3).top_k(6).match_threshold(1);
  StatefulDetector all(opts);
  const std::vector<float> x{0.05f, 0.15f, 0.25f, 0.35f, 0.45f, 0.55f, 0.65f, 0.75f};
  const auto fp = all.fingerprint(x.data(), 8);
  ASSERT_EQ(fp.size(), 6u);  // 8 - 3 + 1 windows, all distinct
  EXPECT_TRUE(std::is_sorted(fp.rbegin(), fp.rend()));
  EXPECT_EQ(all.fingerprint(x.data(), 8), fp);

  auto y = x;
  y[0] += 0.5f;  // only window 0 covers value 0
  EXPECT_EQ(shared(all.fingerprint(y.data(), 8), fp), 5);
  y = x;
  y[4] += 0.5f;  // windows 2, 3 and 4 cover value 4
  EXPECT_EQ(shared(all.fingerprint(y.data(), 8), fp), 3);

  // top_k 2 keeps the two largest of the same hashes.
  StatefulDetector two(StatefulOptions(opts).top_k(2));
  EXPECT_EQ(two.fingerprint(x.data(), 8), std::vector<uint64_t>(fp.begin(), fp.begin() + 2));
  // Stride 2: windows at 0, 2, 4.
  EXPECT_EQ(StatefulDetector(StatefulOptions(opts).stride(2)).fingerprint(x.data(), 8).size(), 3u);
  // An input shorter than the window is one window.
  EXPECT_EQ(all.fingerprint(x.data(), 2).size(), 1u);
  // Another key, other hashes: an attacker without the key cannot compute them.
  EXPECT_EQ(shared(StatefulDetector(StatefulOptions(opts).key(kKey + 1)).fingerprint(x.data(), 8), fp), 0);
  // A constant input repeats one window: one distinct hash.
  const std::vector<float> flat(8, 0.3f);
  EXPECT_EQ(all.fingerprint(flat.data(), 8).size(), 1u);
  EXPECT_THROW(all.fingerprint(x.data(), 0), Error);
}

TEST(StatefulFingerprint, DefaultsKeepTopK) {
  StatefulDetector det(StatefulOptions().key(kKey));
  std::mt19937 rng(1);
  const auto x = random_image(rng);
  const auto fp = det.fingerprint(x.data(), kD);
  EXPECT_EQ(fp.size(), 50u);
  EXPECT_EQ(std::adjacent_find(fp.begin(), fp.end()), fp.end());  // distinct
  EXPECT_TRUE(std::is_sorted(fp.rbegin(), fp.rend()));
  // A few nudged pixels leave most windows, so most of the top 50, in place.
  EXPECT_GE(shared(det.fingerprint(nudge(x, rng).data(), kD), fp), 25);
}

TEST(StatefulDetector, NearDuplicateStreamIsFlaggedWithinAFewQueries) {
  StatefulDetector det(StatefulOptions().key(kKey));
  std::mt19937 rng(2);
  auto x = random_image(rng);
  int newly = 0, first_flag = -1;
  for (int q = 0; q < 50; ++q) {
    const auto v = det.observe("attacker", x.data(), kImage, q);
    EXPECT_EQ(v.hit, q > 0) << "query " << q << " shared " << v.shared;
    newly += v.newly_flagged;
    if (v.flagged && first_flag < 0) first_flag = q;
    x = nudge(x, rng);
  }
  EXPECT_EQ(first_flag, 3);  // hits at queries 1, 2, 3; hits_to_flag 3
  EXPECT_EQ(newly, 1);
  EXPECT_EQ(det.stats(50).flagged_clients, 1);
  EXPECT_FALSE(det.state("attacker", 50).blocked);  // policy flag: reported, not enforced
  EXPECT_TRUE(det.state("attacker", 50).flagged);
}

TEST(StatefulDetector, SquareLikeSquaresOnFashionMnistAreFlagged) {
  const auto images = fashion_mnist_test(1);
  if (images.empty()) GTEST_SKIP() << "Fashion-MNIST not installed";
  // Square (Andriushchenko et al. 2020), L-inf eps 0.3: each query moves a 6 x 6 square to x0 +- eps,
  // kept when it helps (here: a coin flip).
  StatefulDetector det(StatefulOptions().key(kKey));
  std::mt19937 rng(3);
  const auto& x0 = images[0];
  auto current = x0;
  int first_flag = -1;
  for (int q = 0; q < 100 && first_flag < 0; ++q) {
    auto candidate = current;
    const int r0 = rng() % 23, c0 = rng() % 23;
    const float sign = (rng() & 1) ? 0.3f : -0.3f;
    for (int r = r0; r < r0 + 6; ++r) {
      for (int c = c0; c < c0 + 6; ++c) candidate[r * 28 + c] = std::clamp(x0[r * 28 + c] + sign, 0.0f, 1.0f);
    }
    if (det.observe("square", candidate.data(), kImage, q).flagged) first_flag = q;
    if (rng() & 1) current = candidate;
  }
  EXPECT_GE(first_flag, 3);
  EXPECT_LE(first_flag, 10);
}

TEST(StatefulDetector, DistinctFashionMnistImagesAreNotFlagged) {
  const auto images = fashion_mnist_test(5000);
  if (images.empty()) GTEST_SKIP() << "Fashion-MNIST not installed";
  StatefulDetector det(StatefulOptions().key(kKey).max_queries_per_client(5000));
  int hits = 0;
  for (size_t i = 0; i < images.size(); ++i) {
    const auto v = det.observe("benign", images[i].data(), kImage, static_cast<double>(i) * 0.1);
    hits += v.hit;
    ASSERT_FALSE(v.flagged) << "image " << i;
  }
  EXPECT_LE(hits, 2);  // 0 with this key; the test set holds a few near-duplicate pairs
}

TEST(StatefulDetector, DistinctSmoothPatternsAreNotFlagged) {
  StatefulDetector det(StatefulOptions().key(kKey));
  std::mt19937 rng(4);
  int hits = 0;
  for (int i = 0; i < 1000; ++i) hits += det.observe("benign", smooth_image(rng).data(), kImage, i).hit;
  EXPECT_EQ(hits, 0);
  EXPECT_EQ(det.stats(1000).flagged_clients, 0);
}

TEST(StatefulDetector, HistoryIsPerClient) {
  StatefulDetector det(StatefulOptions().key(kKey));
  std::mt19937 rng(5);
  auto x = random_image(rng);
  // One near-duplicate per client: nobody has two similar queries of its own.
  for (int c = 0; c < 40; ++c) {
    EXPECT_FALSE(det.observe("client-" + std::to_string(c), x.data(), kImage, c).hit);
    x = nudge(x, rng);
  }
  EXPECT_EQ(det.stats(40).flagged_clients, 0);
  EXPECT_EQ(det.stats(40).hits, 0);
  // B sending A's exact image does not hit; A sending a near-duplicate of its own does.
  const auto a = random_image(rng);
  EXPECT_FALSE(det.observe("A", a.data(), kImage, 50).hit);
  EXPECT_FALSE(det.observe("B", a.data(), kImage, 51).hit);
  EXPECT_TRUE(det.observe("A", nudge(a, rng).data(), kImage, 52).hit);
}

TEST(StatefulDetector, MemoryStaysUnderItsCap) {
  StatefulDetector det(StatefulOptions().key(kKey).max_clients(8).max_queries_per_client(20).shards(1));
  std::mt19937 rng(6);
  // 1000 distinct queries from 50 rotating identities (constant client eviction), then 1000 from
  // 8 steady clients, which fills every quota.
  for (int q = 0; q < 2000; ++q) {
    const std::string client = q < 1000 ? "flooder-" + std::to_string(q % 50) : "steady-" + std::to_string(q % 8);
    det.observe(client, random_image(rng).data(), kImage, q);
    if (q % 100 == 99) {
      const auto s = det.stats(q);
      EXPECT_LE(s.memory_bytes, s.memory_cap_bytes);
      EXPECT_LE(s.stored_queries, 8 * 20);
      EXPECT_LE(s.clients, 8);
    }
  }
  const auto s = det.stats(2000);
  EXPECT_EQ(s.queries, 2000);
  EXPECT_EQ(s.stored_queries, 8 * 20);
  EXPECT_EQ(s.bytes_per_query, det.bytes_per_query());
  EXPECT_EQ(s.memory_cap_bytes, 8 * (20 * det.bytes_per_query() + 1024));
  EXPECT_GT(s.memory_bytes, s.memory_cap_bytes / 2);  // the estimate tracks the fill
}

TEST(StatefulDetector, FloodingClientEvictsOnlyItsOwnHistory) {
  StatefulDetector det(StatefulOptions().key(kKey).max_queries_per_client(50));
  std::mt19937 rng(7);
  auto a = random_image(rng);
  for (int q = 0; q < 2; ++q) {
    det.observe("A", a.data(), kImage, q);
    a = nudge(a, rng);
  }
  for (int q = 0; q < 500; ++q) det.observe("M", random_image(rng).data(), kImage, 10 + q * 0.01);
  const auto v = det.observe("A", a.data(), kImage, 20);
  EXPECT_TRUE(v.hit) << "shared " << v.shared;
  EXPECT_EQ(det.stats(20).stored_queries, 3 + 50);
}

TEST(StatefulDetector, FullTableEvictsTheLeastRecentlyActiveClient) {
  // One shard: exact LRU over all clients.
  StatefulDetector det(StatefulOptions().key(kKey).max_clients(2).shards(1));
  std::mt19937 rng(8);
  const auto a = random_image(rng), b = random_image(rng), c = random_image(rng);
  det.observe("A", a.data(), kImage, 0);
  det.observe("B", b.data(), kImage, 1);
  det.observe("A", random_image(rng).data(), kImage, 2);  // A is now the more recent
  det.observe("C", c.data(), kImage, 3);                  // evicts B
  EXPECT_EQ(det.stats(3).clients, 2);
  EXPECT_TRUE(det.observe("A", a.data(), kImage, 4).hit);
  EXPECT_FALSE(det.observe("B", b.data(), kImage, 5).hit);  // B's history is gone
}

TEST(StatefulDetector, OldQueriesAreForgotten) {
  StatefulDetector det(StatefulOptions().key(kKey).max_age_s(100));
  std::mt19937 rng(9);
  auto x = random_image(rng);
  det.observe("A", x.data(), kImage, 0);
  x = nudge(x, rng);
  EXPECT_TRUE(det.observe("A", x.data(), kImage, 50).hit);
  x = nudge(x, rng);
  EXPECT_FALSE(det.observe("A", x.data(), kImage, 200).hit);  // both earlier ones are > 100 s old
  EXPECT_EQ(det.stats(200).stored_queries, 1);

  det.observe("B", x.data(), kImage, 210);
  det.prune(250);
  EXPECT_EQ(det.stats(250).stored_queries, 2);
  det.prune(400);  // everything older than 300: gone, and the clients with it
  EXPECT_EQ(det.stats(400).stored_queries, 0);
  EXPECT_EQ(det.stats(400).clients, 1);  // A had a hit within flag_window_s: kept
}

TEST(StatefulDetector, BlockPolicyBlocksForBlockSeconds) {
  StatefulDetector det(StatefulOptions().key(kKey).policy(Policy::kBlock).hits_to_flag(2).block_s(600));
  std::mt19937 rng(10);
  const auto x = random_image(rng);
  EXPECT_FALSE(det.observe("A", x.data(), kImage, 0).blocked);
  EXPECT_FALSE(det.observe("A", x.data(), kImage, 1).blocked);  // one hit
  const auto v = det.observe("A", x.data(), kImage, 2);         // two: flagged, blocked
  EXPECT_TRUE(v.blocked && v.flagged && v.newly_flagged);
  EXPECT_FALSE(v.throttled);
  EXPECT_EQ(v.client_hits, 2);

  const auto s = det.state("A", 100);
  EXPECT_TRUE(s.blocked);
  EXPECT_DOUBLE_EQ(s.until_s, 602);
  EXPECT_NE(s.reason.find("stateful detector"), std::string::npos) << s.reason;
  EXPECT_NE(s.reason.find("blocked for another 502 s"), std::string::npos) << s.reason;
  EXPECT_EQ(det.stats(100).blocked_clients, 1);
  EXPECT_FALSE(det.state("B", 100).blocked);
  EXPECT_FALSE(det.state("A", 603).blocked);
  EXPECT_TRUE(det.state("A", 603).reason.find("blocked") == std::string::npos);
}

TEST(StatefulDetector, ThrottleAndFlagPolicies) {
  std::mt19937 rng(11);
  const auto x = random_image(rng);
  StatefulDetector throttle(StatefulOptions().key(kKey).policy(Policy::kThrottle).hits_to_flag(1).block_s(60));
  throttle.observe("A", x.data(), kImage, 0);
  EXPECT_TRUE(throttle.observe("A", x.data(), kImage, 1).throttled);
  EXPECT_TRUE(throttle.state("A", 30).throttled);
  EXPECT_FALSE(throttle.state("A", 30).blocked);
  EXPECT_FALSE(throttle.state("A", 62).throttled);

  StatefulDetector flag(StatefulOptions().key(kKey).hits_to_flag(1));
  flag.observe("A", x.data(), kImage, 0);
  const auto v = flag.observe("A", x.data(), kImage, 1);
  EXPECT_TRUE(v.flagged && !v.blocked && !v.throttled);
  EXPECT_FALSE(flag.state("A", 5000).flagged);  // the hit left flag_window_s
}

void expect_invalid(const std::function<void()>& f, const std::string& key) {
  try {
    f();
    ADD_FAILURE() << "no error for " << key;
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kInvalidArgument);
    EXPECT_NE(std::string(e.what()).find(key), std::string::npos) << e.what();
  }
}

TEST(StatefulOptions, BadValuesThrowNamingTheKey) {
  expect_invalid([] { StatefulOptions().quant_step(0); }, "stateful.quant_step");
  expect_invalid([] { StatefulOptions().window(5000); }, "stateful.window");
  expect_invalid([] { StatefulOptions().stride(0); }, "stateful.stride");
  expect_invalid([] { StatefulOptions().top_k(0); }, "stateful.top_k");
  expect_invalid([] { StatefulOptions().match_threshold(0); }, "stateful.match_threshold");
  expect_invalid([] { StatefulOptions().max_queries_per_client(0); }, "stateful.max_queries_per_client");
  expect_invalid([] { StatefulOptions().max_clients(-1); }, "stateful.max_clients");
  expect_invalid([] { StatefulOptions().max_age_s(0); }, "stateful.max_age_s");
  expect_invalid([] { StatefulOptions().hits_to_flag(0); }, "stateful.hits_to_flag");
  expect_invalid([] { StatefulOptions().flag_window_s(NAN); }, "stateful.flag_window_s");
  expect_invalid([] { StatefulOptions().block_s(-1); }, "stateful.block_s");
  expect_invalid([] { StatefulOptions().lo(INFINITY); }, "stateful.lo");
  expect_invalid([] { StatefulOptions().shards(0); }, "stateful.shards");
  expect_invalid([] { StatefulOptions().grid(0); }, "stateful.grid");
  expect_invalid([] { StatefulOptions().distance(1.5); }, "stateful.distance");
  expect_invalid([] { StatefulOptions().distance(NAN); }, "stateful.distance");
  expect_invalid([] { StatefulDetector d(StatefulOptions().top_k(10).match_threshold(20)); },
                 "stateful.match_threshold");
  expect_invalid([] { StatefulDetector d(StatefulOptions().lo(1).hi(0)); }, "stateful.lo");
  expect_invalid([] { parse_policy("deny"); }, "stateful.policy");
  for (Policy p : {Policy::kFlag, Policy::kThrottle, Policy::kBlock}) EXPECT_EQ(parse_policy(to_string(p)), p);
}

TEST(StatefulOptions, ReportOmitsTheKeyAndDrawsOneWhenUnset) {
  StatefulDetector det{StatefulOptions()};
  EXPECT_NE(det.options().key(), 0u);
  const auto j = det.options().to_json();
  EXPECT_FALSE(j.contains("key"));
  EXPECT_EQ(j.at("window"), 20);
  EXPECT_EQ(j.at("policy"), "flag");
  // 80 + 50 hashes x 64 bytes with libstdc++ on x86-64, + 16 + 3 x 14 x 14 cells
  EXPECT_EQ(det.bytes_per_query(), 3280u + 16u + 588u);
  EXPECT_EQ(StatefulDetector(StatefulOptions().distance(0)).bytes_per_query(), 3280u);
  EXPECT_TRUE(det.stats(0).to_json().contains("memory_cap_bytes"));
}

TEST(StatefulDetector, ConcurrentClients) {
  StatefulDetector det(StatefulOptions().key(kKey).max_queries_per_client(100));
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&det, t] {
      std::mt19937 rng(100 + t);
      auto x = random_image(rng);
      const std::string me = "client-" + std::to_string(t);
      for (int q = 0; q < 300; ++q) {
        det.observe(me, x.data(), kImage, q);
        x = nudge(x, rng);
        if (q % 50 == 0) {
          det.state(me, q);
          det.stats(q);
          det.prune(q);
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  const auto s = det.stats(300);
  EXPECT_EQ(s.queries, 1200);
  EXPECT_EQ(s.hits, 4 * 299);
  EXPECT_EQ(s.flagged_clients, 4);
  EXPECT_EQ(s.stored_queries, 400);
}

}  // namespace
}  // namespace bulwark::detect

namespace bulwark::detect {
namespace {

// A block lives in its own table: other identities pushing the blocked client's history out of the
// LRU (max_clients) do not lift it (before, a blocked client was unblocked after ~1 s of others).
TEST(StatefulDetector, ABlockSurvivesEvictionPressure) {
  StatefulOptions o;
  o.max_clients(4).shards(1).hits_to_flag(2).policy(Policy::kBlock).block_s(600).key(42);
  StatefulDetector d(o);
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> u(0, 1);
  auto image = [&] {
    std::vector<float> v(784);
    for (auto& p : v) p = u(rng);
    return v;
  };
  const auto x = image();
  for (int q = 0; q < 3; ++q) d.observe("attacker", x.data(), kImage, 10.0 + q);
  ASSERT_TRUE(d.state("attacker", 13).blocked);
  for (int i = 0; i < 200; ++i) {  // far more identities than max_clients
    const auto y = image();
    d.observe("other-" + std::to_string(i), y.data(), kImage, 14.0 + i * 0.01);
  }
  EXPECT_LE(d.stats(20).clients, 4);
  const auto st = d.state("attacker", 20);
  EXPECT_TRUE(st.blocked);
  EXPECT_NEAR(st.until_s, 12.0 + 600, 1e-9);
  EXPECT_FALSE(d.state("attacker", 700).blocked);  // and it ends when it should
}

// observe_rows: the rows of one request in order under one lock; the verdicts say where the client
// became blocked.
TEST(StatefulDetector, ObserveRowsMatchesRowByRow) {
  StatefulOptions o;
  o.hits_to_flag(3).policy(Policy::kBlock).key(7);
  StatefulDetector batch(o), single(o);
  std::mt19937 rng(4);
  std::uniform_real_distribution<float> u(0, 1);
  std::vector<float> x(8 * 784);
  for (int i = 0; i < 784; ++i) x[i] = u(rng);
  for (int q = 1; q < 8; ++q) {  // each row the last with 9 values moved up by 0.1
    std::copy(x.begin() + (q - 1) * 784, x.begin() + q * 784, x.begin() + q * 784);
    for (int i = q * 9; i < q * 9 + 9; ++i) x[q * 784 + i] = std::min(1.0f, x[q * 784 + i] + 0.1f);
  }
  const auto verdicts = batch.observe_rows("c", x.data(), 8, kImage, 1.0);
  ASSERT_EQ(verdicts.size(), 8u);
  for (int q = 0; q < 8; ++q) {
    const auto v = single.observe("c", x.data() + q * 784, kImage, 1.0);
    EXPECT_EQ(verdicts[q].hit, v.hit) << q;
    EXPECT_EQ(verdicts[q].blocked, v.blocked) << q;
  }
  EXPECT_FALSE(verdicts[0].blocked);
  EXPECT_TRUE(verdicts[7].blocked);
}

}  // namespace
}  // namespace bulwark::detect

namespace bulwark::detect {
namespace {

// escalate: flag and throttle first, block only past hits_to_block. A static camera (6 frames of
// one scene with sensor noise) is throttled at most, never blocked; a query attack's near-duplicate
// stream, a hit on nearly every query, is blocked soon after.
TEST(StatefulDetector, EscalateThrottlesRepeatedFramesAndBlocksAnAttackStream) {
  StatefulOptions o;
  // A match threshold at which these frames match each other (18-21 of 50 hashes shared with this
  // key): the test is about what the policy does with the hits.
  o.hits_to_flag(3).hits_to_block(10).policy(Policy::kEscalate).key(9).match_threshold(15);
  StatefulDetector d(o);
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> u(0, 1);
  std::normal_distribution<float> noise(0, 2.0f / 255);
  const auto images = fashion_mnist_test(1);  // a scene with flat regions, as camera scenes have
  if (images.empty()) GTEST_SKIP() << "Fashion-MNIST not installed";
  const auto& scene = images[0];
  std::vector<std::vector<float>> frames;
  for (int k = 0; k < 6; ++k) {
    frames.push_back(scene);
    for (auto& p : frames.back()) p = std::clamp(p + noise(rng), 0.0f, 1.0f);
  }
  StatefulOptions b = o;
  b.policy(Policy::kBlock);
  StatefulDetector strict(b);
  bool camera_blocked = false, camera_throttled = false, strict_blocked = false;
  for (int k = 0; k < 6; ++k) {
    const auto v = d.observe("camera", frames[k].data(), kImage, 1.0 + k);
    camera_blocked = camera_blocked || v.blocked;
    camera_throttled = camera_throttled || v.throttled;
    strict_blocked = strict_blocked || strict.observe("camera", frames[k].data(), kImage, 1.0 + k).blocked;
  }
  EXPECT_TRUE(strict_blocked) << "the frames are near-duplicates: policy block stops them";
  EXPECT_FALSE(camera_blocked);
  EXPECT_TRUE(camera_throttled) << "escalate still slows them";
  EXPECT_FALSE(d.state("camera", 7).blocked);
  // An attack-like stream: the block comes at the 10th hit.
  std::vector<float> x(784);
  for (auto& p : x) p = u(rng);
  int blocked_at = -1;
  for (int q = 0; q < 30 && blocked_at < 0; ++q) {
    x[(q * 37) % 784] = u(rng);  // one value moves per query
    const auto v = d.observe("attacker", x.data(), kImage, 100.0 + q);
    if (v.blocked) blocked_at = q;
  }
  EXPECT_EQ(blocked_at, 10);  // query 0 is stored; queries 1..10 are hits; the 10th hit blocks
  EXPECT_THROW(StatefulDetector(StatefulOptions().policy(Policy::kEscalate).hits_to_flag(5).hits_to_block(5)), Error);
  EXPECT_EQ(parse_policy("escalate"), Policy::kEscalate);
}

}  // namespace
}  // namespace bulwark::detect

namespace bulwark::detect {
namespace {

// The distance test's view, by hand: cell means on 0..255 over torch's adaptive_avg_pool2d partition.
TEST(StatefulCells, MeansOfEachCellByHand) {
  StatefulDetector det(StatefulOptions().grid(2).key(kKey));
  // 1 x 4 x 4: four 2 x 2 cells.
  std::vector<float> x(16, 0.0f);
  x[0] = x[1] = x[4] = x[5] = 1.0f;  // top-left cell: 255
  x[2] = 0.5f;                       // top-right: one of four at 127.5 -> 31.875
  x[15] = 2.0f;                      // bottom-right: clamped to hi -> 63.75
  x[10] = -3.0f;                     // clamped to lo
  x[8] = NAN;                        // counted as lo
  EXPECT_EQ(det.cells(x.data(), {1, 4, 4}), (std::vector<uint8_t>{255, 32, 0, 64}));
  // 1 x 3 x 3 with grid 2: overlapping cells [0, 2) and [1, 3), as adaptive_avg_pool2d.
  const std::vector<float> y{0, 0, 1, 0, 0, 1, 0, 0, 1};
  EXPECT_EQ(det.cells(y.data(), {1, 3, 3}), (std::vector<uint8_t>{0, 128, 0, 128}));
  // RGB: one group per channel; five channels: three groups (adaptive over channels too).
  std::vector<float> rgb(3 * 16, 0.0f);
  std::fill(rgb.begin() + 16, rgb.begin() + 32, 1.0f);  // green everywhere
  EXPECT_EQ(det.cells(rgb.data(), {3, 4, 4}), (std::vector<uint8_t>{0, 0, 0, 0, 255, 255, 255, 255, 0, 0, 0, 0}));
  std::vector<float> five(5 * 16, 1.0f);
  EXPECT_EQ(det.cells(five.data(), {5, 4, 4}).size(), 12u);
  // A flat vector: grid^2 = 4 cells along it.
  const std::vector<float> flat{0, 0, 1, 1, 0, 0, 1, 1};
  EXPECT_EQ(det.cells(flat.data(), {1, 1, 8}), (std::vector<uint8_t>{0, 255, 0, 255}));
  EXPECT_THROW(det.cells(x.data(), {0, 4, 4}), Error);
  EXPECT_THROW(det.cells(nullptr, {1, 4, 4}), Error);
}

// A Square-like stream on a Fashion-MNIST image, each query sent with U(-0.04, 0.04) noise added
// (clamped to [0, 1]), as an attacker padding its queries against the fingerprints. Queries to the flag.
int square_queries_to_flag(const StatefulOptions& o, const std::vector<float>& x0, float noise, uint32_t seed) {
  StatefulDetector det(o);
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> pad(-noise, noise);
  auto current = x0;
  for (int q = 0; q < 100; ++q) {
    auto candidate = current;
    const int r0 = rng() % 23, c0 = rng() % 23;
    const float sign = (rng() & 1) ? 0.1f : -0.1f;
    for (int r = r0; r < r0 + 6; ++r) {
      for (int c = c0; c < c0 + 6; ++c) candidate[r * 28 + c] = std::clamp(x0[r * 28 + c] + sign, 0.0f, 1.0f);
    }
    auto sent = candidate;
    if (noise > 0) {
      for (auto& v : sent) v = std::clamp(v + pad(rng), 0.0f, 1.0f);
    }
    if (det.observe("square", sent.data(), kImage, q).flagged) return q + 1;
    if (rng() & 1) current = candidate;
  }
  return -1;
}

TEST(StatefulDetector, NoisePaddedSquareIsFlaggedAsSoonAsPlainSquare) {
  const auto images = fashion_mnist_test(20);
  if (images.empty()) GTEST_SKIP() << "Fashion-MNIST not installed";
  const auto with_cells = StatefulOptions().key(kKey);
  const auto fingerprints_only = StatefulOptions(with_cells).distance(0);
  int plain = 0, padded = 0, padded_fingerprints = 0, missed_fingerprints = 0;
  for (int i = 0; i < 20; ++i) {
    const int a = square_queries_to_flag(with_cells, images[i], 0, 100 + i);
    const int b = square_queries_to_flag(with_cells, images[i], 0.04f, 100 + i);
    const int f = square_queries_to_flag(fingerprints_only, images[i], 0.04f, 100 + i);
    ASSERT_GT(a, 0) << "image " << i;
    ASSERT_GT(b, 0) << "image " << i << ": noise padding evaded the detector";
    plain += a;
    padded += b;
    if (f < 0) ++missed_fingerprints;
    else padded_fingerprints += f;
  }
  // The same number of queries (within 50 %) with and without the padding ...
  EXPECT_LE(padded, plain * 3 / 2) << "plain " << plain << ", padded " << padded;
  EXPECT_GE(padded, plain / 2);
  // ... where the fingerprints alone miss most padded streams within 100 queries (the reason for the cells).
  EXPECT_GE(missed_fingerprints, 10) << "fingerprints alone flagged " << 20 - missed_fingerprints << " of 20";
}

// Distinct images stay apart in the cells' view: the 10,000 test images from one client, each
// compared with the 1,000 before it (the default history), are never within the default distance.
TEST(StatefulDetector, DistinctFashionMnistImagesStayBeyondTheDistance) {
  const auto images = fashion_mnist_test(10000);
  if (images.empty()) GTEST_SKIP() << "Fashion-MNIST not installed";
  StatefulDetector det(StatefulOptions().key(kKey).policy(Policy::kBlock));
  int hits = 0;
  double closest = 1;
  for (size_t i = 0; i < images.size(); ++i) {
    const auto v = det.observe("benign", images[i].data(), kImage, static_cast<double>(i) * 0.01);
    hits += v.hit;
    if (v.nearest >= 0) closest = std::min(closest, v.nearest);
    ASSERT_FALSE(v.blocked) << "image " << i;
  }
  EXPECT_EQ(hits, 0);
  EXPECT_GT(closest, StatefulOptions().distance()) << "closest pair " << closest;
  EXPECT_LT(closest, 0.1) << "the view does tell near images apart from far ones";
}

}  // namespace
}  // namespace bulwark::detect
