// The extraction detector (detect/extraction.h) and its Shapiro-Wilk test (detect/shapiro_wilk.h):
// W and p against scipy's values; PRADA flags a synthetic-distance stream and not natural images;
// the unsure-answer share at its exact threshold; policies, bounded memory, bad options.
#include "detect/extraction.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "core/error.h"
#include "data/dataset.h"
#include "detect/shapiro_wilk.h"

namespace bulwark::detect {
namespace {

constexpr Shape kImage{1, 28, 28};
constexpr int64_t kD = 784;

// The golden samples (tests/fixtures/shapiro_wilk_golden.py builds the same ones).
std::vector<double> golden_sample(const std::string& kind, int n) {
  std::vector<double> x;
  for (uint64_t i = 1; i <= static_cast<uint64_t>(n); ++i) {
    const double u = (static_cast<double>((i * 2654435761ULL) % (1ULL << 32)) + 0.5) / 4294967296.0;
    if (kind == "uniform") x.push_back(u);
    if (kind == "normal") x.push_back(normal_quantile(u));
    if (kind == "exponential") x.push_back(-std::log(u));
    if (kind == "bimodal") x.push_back(u < 0.5 ? u : u + 3.0);
    if (kind == "square") x.push_back(u * u);
  }
  return x;
}

struct Golden {
  const char* kind;
  int n;
  double w, p;
};
const Golden kGolden[] = {
    {"uniform", 3, 0.981762886, 0.7412916422},
    {"uniform", 4, 0.9999681711, 0.9999171495},
    {"uniform", 5, 0.980207026, 0.9357233047},
    {"uniform", 6, 0.9626227021, 0.8397086859},
    {"uniform", 7, 0.9778307676, 0.9483622313},
    {"uniform", 11, 0.9552336335, 0.7111768723},
    {"uniform", 12, 0.9680237174, 0.889036715},
    {"uniform", 20, 0.9604498148, 0.5528742075},
    {"uniform", 50, 0.95264256, 0.04384729266},
    {"uniform", 100, 0.9539555907, 0.001525900327},
    {"uniform", 500, 0.9546206594, 2.841215804e-11},
    {"uniform", 1000, 0.9547684193, 5.288823099e-17},
    {"uniform", 5000, 0.9548969269, 9.349788904e-37},
    {"normal", 3, 0.992584765, 0.8353337646},
    {"normal", 4, 0.9973318577, 0.991137445},
    {"normal", 5, 0.9931182861, 0.9893941879},
    {"normal", 6, 0.9751847386, 0.9252732992},
    {"normal", 7, 0.9925406575, 0.9969967604},
    {"normal", 11, 0.9871956706, 0.9931675196},
    {"normal", 12, 0.9926240444, 0.9999774098},
    {"normal", 20, 0.9934771657, 0.9999167323},
    {"normal", 50, 0.9951996207, 0.9992482066},
    {"normal", 100, 0.9986121058, 0.9999992251},
    {"normal", 500, 0.9996295571, 0.999999702},
    {"normal", 1000, 0.9998910427, 1},
    {"normal", 5000, 0.9999718666, 1},
    {"exponential", 3, 0.9239692092, 0.4664681256},
    {"exponential", 4, 0.9610020518, 0.7852134705},
    {"exponential", 5, 0.9307044744, 0.6011823416},
    {"exponential", 6, 0.8743181229, 0.2439667284},
    {"exponential", 7, 0.9126344323, 0.4144159853},
    {"exponential", 11, 0.8985310793, 0.1773569733},
    {"exponential", 12, 0.9125512838, 0.2300057709},
    {"exponential", 20, 0.8742153645, 0.01394581608},
    {"exponential", 50, 0.8459573984, 1.204634555e-05},
    {"exponential", 100, 0.826028049, 1.696823793e-09},
    {"exponential", 500, 0.8261554241, 6.828427327e-23},
    {"exponential", 1000, 0.8224275112, 7.619746575e-32},
    {"exponential", 5000, 0.8164191842, 0},
    {"bimodal", 3, 0.7987138033, 0.111430414},
    {"bimodal", 4, 0.7881929874, 0.08267709613},
    {"bimodal", 5, 0.7565675974, 0.03419796377},
    {"bimodal", 6, 0.7464793921, 0.01839687116},
    {"bimodal", 7, 0.7290660143, 0.007630024105},
    {"bimodal", 11, 0.7158088684, 0.000747797545},
    {"bimodal", 12, 0.7180715799, 0.001265217317},
    {"bimodal", 20, 0.7112220526, 5.359371426e-05},
    {"bimodal", 50, 0.7081702948, 1.163388408e-08},
    {"bimodal", 100, 0.7084978223, 8.546897998e-13},
    {"bimodal", 500, 0.7092394233, 1.584560788e-28},
    {"bimodal", 1000, 0.7093075514, 2.097679061e-38},
    {"bimodal", 5000, 0.7093626857, 0},
    {"square", 3, 0.9996672869, 0.9651618004},
    {"square", 4, 0.9671524763, 0.8237783909},
    {"square", 5, 0.9166314602, 0.5084465146},
    {"square", 6, 0.954492569, 0.7764492631},
    {"square", 7, 0.9281105399, 0.5349467993},
    {"square", 11, 0.9252653122, 0.3649590313},
    {"square", 12, 0.919493854, 0.2817487717},
    {"square", 20, 0.9038164616, 0.04865171015},
    {"square", 50, 0.8958446383, 0.0003513282572},
    {"square", 100, 0.8966480494, 9.868450661e-07},
    {"square", 500, 0.8949352503, 5.177137338e-18},
    {"square", 1000, 0.8951443434, 1.524710358e-25},
    {"square", 5000, 0.8952115774, 0},
};

TEST(ShapiroWilk, MatchesScipy) {
  for (const auto& g : kGolden) {
    const auto r = shapiro_wilk(golden_sample(g.kind, g.n));
    // scipy's swilk runs in single precision: W agrees to 1.3e-6 up to n = 1,000 and 4e-6 at 5,000;
    // p to 2e-3 relative in the far tail (scipy's 0 there is a float underflow).
    EXPECT_NEAR(r.w, g.w, g.n <= 1000 ? 2e-6 : 5e-6) << g.kind << " n=" << g.n;
    EXPECT_NEAR(r.p_value, g.p, 2e-3 * g.p + 1e-30) << g.kind << " n=" << g.n;
  }
}

TEST(ShapiroWilk, RefusesWhatItCannotTest) {
  EXPECT_THROW(shapiro_wilk({1.0, 2.0}), Error);
  EXPECT_THROW(shapiro_wilk(std::vector<double>(5001, 1.0)), Error);
  EXPECT_THROW(shapiro_wilk({1.0, 1.0, 1.0, 1.0}), Error);
  EXPECT_THROW(shapiro_wilk({1.0, NAN, 2.0}), Error);
  // Order and scale do not matter.
  const auto a = shapiro_wilk({3.0, 1.0, 2.0, 7.0, 4.0});
  const auto b = shapiro_wilk({10.0, 20.0, 30.0, 40.0, 70.0});
  EXPECT_NEAR(a.w, b.w, 1e-12);
  EXPECT_NEAR(normal_quantile(0.975), 1.959963984540054, 1e-12);
  EXPECT_NEAR(normal_quantile(1e-10), -6.361340902404056, 1e-9);
}

// One-hot-ish logits: the model is sure of class c (top probability ~0.9995).
std::vector<float> sure(int64_t c) {
  std::vector<float> z(10, 0.0f);
  z[static_cast<size_t>(c)] = 10.0f;
  return z;
}
std::vector<float> unsure() { return std::vector<float>(10, 0.0f); }  // top probability 0.1

ExtractionOptions prada_only() { return ExtractionOptions().max_unsure_share(1).key(7); }

// A synthetic stream: half near-copies of one seed per class (small noise), half fresh uniform
// noise images: the distances are two clusters, far from normal.
TEST(Extraction, PradaFlagsASyntheticStream) {
  ExtractionDetector d(prada_only());
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> u(0, 1);
  std::normal_distribution<float> noise(0, 0.02f);
  std::vector<std::vector<float>> seeds(10, std::vector<float>(kD));
  for (auto& s : seeds) for (float& v : s) v = u(rng);
  int64_t flagged_at = -1;
  double w = -1;
  for (int64_t q = 0; q < 400 && flagged_at < 0; ++q) {
    std::vector<float> x(kD);
    const int64_t c = q % 10;
    for (int64_t i = 0; i < kD; ++i) x[i] = q % 4 < 2 ? std::clamp(seeds[c][i] + noise(rng), 0.0f, 1.0f) : u(rng);
    const auto z = sure(c);
    const auto v = d.observe_rows("thief", x.data(), 1, kImage, z.data(), 10, 0.0)[0];
    if (v.flagged) flagged_at = q + 1, w = v.w;
  }
  ASSERT_GT(flagged_at, 0) << "PRADA never flagged a two-cluster distance stream";
  EXPECT_LE(flagged_at, 115) << "the first test runs at 100 distances (10 first-of-class queries give none)";
  EXPECT_LT(w, 0.9);
  const auto st = d.state("thief", 0.0);
  EXPECT_TRUE(st.flagged);
  EXPECT_FALSE(st.blocked) << "policy flag only reports";
  EXPECT_NE(st.reason.find("PRADA"), std::string::npos) << st.reason;
  EXPECT_FALSE(d.state("someone-else", 0.0).flagged);
}

// Natural images, each labelled with its true class: Fashion-MNIST's test set, 1,500 of them.
TEST(Extraction, PradaLeavesNaturalImagesAlone) {
  static const data::Dataset test = data::load_dataset("fashion-mnist", data::Split::kTest).head(1500);
  const auto x = test.inputs().contiguous();
  ExtractionDetector d(prada_only());
  double min_w = 2;
  int64_t tested = 0;
  for (int64_t i = 0; i < test.size(); ++i) {
    const auto z = sure(test.labels[i].item<int64_t>());
    const auto v = d.observe_rows("reader", x[i].data_ptr<float>(), 1, kImage, z.data(), 10, 0.0)[0];
    ASSERT_FALSE(v.flagged) << "natural images flagged at query " << i + 1 << ", W " << v.w;
    if (v.w >= 0) min_w = std::min(min_w, v.w), ++tested;
  }
  EXPECT_GT(tested, 1300) << "the test ran on most queries";
  EXPECT_GT(min_w, d.options().delta());
}

// The unsure share flags exactly above max_unsure_share once min_answers are in.
TEST(Extraction, UnsureShareFlagsAboveItsThresholdOnly) {
  const auto o = ExtractionOptions().delta(0).min_answers(10).answer_window(10).max_unsure_share(0.3).key(7);
  std::vector<float> x(kD, 0.5f);
  for (const int unsure_answers : {3, 4}) {
    ExtractionDetector d(o);
    ExtractionVerdict last;
    for (int q = 0; q < 10; ++q) {
      const auto z = q < unsure_answers ? unsure() : sure(q % 10);
      last = d.observe_rows("c", x.data(), 1, kImage, z.data(), 10, 0.0)[0];
      if (q < 9) {
        EXPECT_FALSE(last.flagged) << "tested before min_answers";
        EXPECT_LT(last.unsure_share, 0);
      }
    }
    EXPECT_DOUBLE_EQ(last.unsure_share, unsure_answers / 10.0);
    EXPECT_EQ(last.flagged, unsure_answers == 4) << unsure_answers << " of 10";
    EXPECT_EQ(last.w, -1) << "PRADA off";
  }
  // The window slides: sure answers after the flag bring the share down (the flag lasts block_s).
  ExtractionDetector d(o);
  for (int q = 0; q < 10; ++q) d.observe_rows("c", x.data(), 1, kImage, unsure().data(), 10, 0.0);
  ExtractionVerdict v;
  for (int q = 0; q < 10; ++q) v = d.observe_rows("c", x.data(), 1, kImage, sure(1).data(), 10, 1.0)[0];
  EXPECT_DOUBLE_EQ(v.unsure_share, 0.0);
  EXPECT_TRUE(v.flagged);
  EXPECT_FALSE(d.state("c", 1.0 + d.options().block_s() + 1).flagged);
}

TEST(Extraction, PoliciesBlockOrThrottleForBlockSeconds) {
  for (const Policy p : {Policy::kFlag, Policy::kThrottle, Policy::kBlock}) {
    const auto o = ExtractionOptions().delta(0).min_answers(5).answer_window(5).block_s(60).policy(p).key(7);
    ExtractionDetector d(o);
    std::vector<float> x(5 * kD, 0.5f);
    std::vector<float> z;
    for (int i = 0; i < 5; ++i) z.insert(z.end(), 10, 0.0f);
    const auto v = d.observe_rows("c", x.data(), 5, kImage, z.data(), 10, 100.0);
    ASSERT_EQ(v.size(), 5u);
    EXPECT_FALSE(v[3].flagged);
    EXPECT_TRUE(v[4].flagged && v[4].newly_flagged);
    EXPECT_EQ(v[4].blocked, p == Policy::kBlock);
    EXPECT_EQ(v[4].throttled, p == Policy::kThrottle);
    const auto during = d.state("c", 159.0), after = d.state("c", 161.0);
    EXPECT_EQ(during.blocked, p == Policy::kBlock);
    EXPECT_EQ(during.throttled, p == Policy::kThrottle);
    EXPECT_NE(during.reason.find("unsure"), std::string::npos) << during.reason;
    EXPECT_FALSE(after.blocked || after.throttled || after.flagged);
  }
  EXPECT_THROW(ExtractionOptions().policy(Policy::kEscalate), Error);
  EXPECT_EQ(parse_extraction_policy("block"), Policy::kBlock);
  EXPECT_THROW(parse_extraction_policy("escalate"), Error);
}

// Many clients: at most max_clients are kept, each with at most max_set views, under the stated
// cap; evicting a blocked client's history (other identities can force it) does not lift its block.
TEST(Extraction, MemoryIsBoundedAndEvictionKeepsBlocks) {
  const auto o = ExtractionOptions().max_clients(8).shards(2).max_set(20).min_answers(5).answer_window(5)
                     .policy(Policy::kBlock).key(7);
  ExtractionDetector d(o);
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> u(0, 1);
  std::vector<float> x(kD);
  // The victim of eviction: blocked by five unsure answers.
  for (int q = 0; q < 5; ++q) {
    for (float& v : x) v = u(rng);
    d.observe_rows("blocked", x.data(), 1, kImage, unsure().data(), 10, 0.0);
  }
  ASSERT_TRUE(d.state("blocked", 1.0).blocked);
  for (int c = 0; c < 200; ++c) {
    for (int q = 0; q < 30; ++q) {
      for (float& v : x) v = u(rng);
      d.observe_rows("client-" + std::to_string(c), x.data(), 1, kImage, sure(q % 10).data(), 10, 1.0);
    }
  }
  const auto s = d.stats(1.0);
  EXPECT_LE(s.clients, 8);
  EXPECT_LE(s.stored_views, 8 * 20);
  EXPECT_GT(s.stored_views, 0);
  EXPECT_LE(s.memory_bytes, s.memory_cap_bytes);
  EXPECT_EQ(s.queries, 5 + 200 * 30);
  EXPECT_TRUE(d.state("blocked", 2.0).blocked) << "evicting history lifted a block";
  d.prune(1.0 + o.max_age_s() + 1 + o.block_s());
  EXPECT_EQ(d.stats(1.0 + o.max_age_s() + 1 + o.block_s()).clients, 0);
}

// Each bad value is refused naming the key, its serve flag and the limit.
TEST(Extraction, BadOptionsNameTheFlagAndTheLimit) {
  auto message = [](const auto& f) {
    try {
      f();
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("(accepted)");
  };
  auto expect = [&](const std::string& m, const std::string& flag, const std::string& limit) {
    EXPECT_NE(m.find(flag), std::string::npos) << m;
    EXPECT_NE(m.find(limit), std::string::npos) << m;
  };
  expect(message([] { ExtractionOptions().delta(1.5); }), "--extraction-delta", "[0, 1]");
  expect(message([] { ExtractionOptions().delta(NAN); }), "--extraction-delta", "[0, 1]");
  expect(message([] { ExtractionOptions().window(6000); }), "--extraction-window", "3..5000");
  expect(message([] { ExtractionOptions().min_distances(2); }), "--extraction-min-distances", "3..5000");
  expect(message([] { ExtractionOptions().confidence(0); }), "--extraction-confidence", "(0, 1]");
  expect(message([] { ExtractionOptions().max_unsure_share(-0.1); }), "--extraction-max-unsure-share", "(0, 1]");
  expect(message([] { ExtractionOptions().max_clients(0); }), "--extraction-max-clients", "1..10000000");
  expect(message([] { ExtractionOptions().block_s(0); }), "--extraction-block-s", "positive");
  expect(message([] { ExtractionOptions().grid(65); }), "--extraction-grid", "1..64");
  expect(message([] { ExtractionDetector(ExtractionOptions().min_distances(200).window(100)); }),
         "extraction.min_distances (200)", "extraction.window (100)");
  expect(message([] { ExtractionDetector(ExtractionOptions().min_answers(300).answer_window(200)); }),
         "extraction.min_answers (300)", "extraction.answer_window (200)");
  expect(message([] { ExtractionDetector(ExtractionOptions().delta(0).max_unsure_share(1)); }), "both statistics",
         "extraction.delta 0");
}

}  // namespace
}  // namespace bulwark::detect
