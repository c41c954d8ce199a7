// Merkle helpers of the audit log against RFC 9162's own worked example (§2.1.4.3, seven leaves
// d0..d6): the frontier reproduces the tree head at every size, consistency proofs have the
// RFC's shape and verify, and any change to a root, a proof element or a size makes them fail.
#include "registry/merkle.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "core/digest.h"
#include "core/error.h"

namespace bulwark::registry {
namespace {

std::vector<std::string> leaves(size_t n) {
  std::vector<std::string> out;
  for (size_t i = 0; i < n; ++i) out.push_back("d" + std::to_string(i) + std::string(i % 3, 'x'));
  return out;
}

std::vector<std::string> hashes(const std::vector<std::string>& data) {
  std::vector<std::string> out;
  for (const auto& d : data) out.push_back(merkle_leaf_hash(d));
  return out;
}

std::vector<std::string> prefix(const std::vector<std::string>& v, size_t n) { return {v.begin(), v.begin() + n}; }

TEST(Merkle, TheFrontierReproducesTheTreeHeadAtEverySize) {
  const auto data = leaves(70);
  MerkleFrontier f;
  EXPECT_EQ(f.root(), merkle_root({}));
  for (size_t n = 1; n <= data.size(); ++n) {
    f.append(data[n - 1]);
    ASSERT_EQ(f.size, static_cast<int64_t>(n));
    EXPECT_EQ(f.subtrees.size(), static_cast<size_t>(__builtin_popcountll(n))) << n;
    ASSERT_EQ(hex_encode(f.root()), hex_encode(merkle_root(prefix(data, n)))) << n << " leaves";
    const auto back = MerkleFrontier::parse(f.serialize());
    EXPECT_EQ(back.size, f.size);
    EXPECT_EQ(back.root(), f.root());
  }
}

TEST(Merkle, AFrontierThatDoesNotFitItsSizeIsRefused) {
  MerkleFrontier f;
  for (const auto& d : leaves(5)) f.append(d);
  const std::string text = f.serialize();  // "5:a,b"
  EXPECT_THROW(MerkleFrontier::parse("7" + text.substr(1)), Error);
  EXPECT_THROW(MerkleFrontier::parse("5:zz"), Error);
  EXPECT_THROW(MerkleFrontier::parse("five:" + text.substr(2)), Error);
  EXPECT_THROW(MerkleFrontier::parse(""), Error);
}

// RFC 9162 §2.1.4.3: for the seven-leaf tree, PROOF(3, D[7]) = [c, d, g, l], PROOF(4, D[7]) = [l],
// PROOF(6, D[7]) = [i, j, k], where c, d are the leaves d2, d3; g = MTH(d0, d1); i = MTH(d4, d5);
// j = the leaf d6; k = MTH(d0..d3); l = MTH(d4..d6).
TEST(Merkle, ConsistencyProofsHaveTheShapeOfTheRfcExample) {
  const auto d = leaves(7);
  const auto h = hashes(d);
  const auto mth = [&](size_t begin, size_t end) { return merkle_root({d.begin() + begin, d.begin() + end}); };
  EXPECT_EQ(consistency_proof(h, 3), (std::vector<std::string>{h[2], h[3], mth(0, 2), mth(4, 7)}));
  EXPECT_EQ(consistency_proof(h, 4), (std::vector<std::string>{mth(4, 7)}));
  EXPECT_EQ(consistency_proof(h, 6), (std::vector<std::string>{mth(4, 6), h[6], mth(0, 4)}));
  EXPECT_TRUE(consistency_proof(h, 7).empty());
}

TEST(Merkle, EveryProofBetweenTwoSizesVerifiesAndEveryChangeFails) {
  const auto d = leaves(33);
  const auto h = hashes(d);
  for (size_t n = 1; n <= d.size(); ++n) {
    const std::string root_n = merkle_root(prefix(d, n));
    const auto hn = prefix(h, n);
    for (size_t m = 1; m <= n; ++m) {
      const std::string root_m = merkle_root(prefix(d, m));
      const auto proof = consistency_proof(hn, m);
      ASSERT_TRUE(verify_consistency(m, n, root_m, root_n, proof)) << m << " -> " << n;
      if (m == n) continue;
      std::string bad = root_m;
      bad[5] ^= 1;
      EXPECT_FALSE(verify_consistency(m, n, bad, root_n, proof)) << m << " -> " << n;
      EXPECT_FALSE(verify_consistency(m, n, root_m, bad, proof)) << m << " -> " << n;
      for (size_t i = 0; i < proof.size(); ++i) {
        auto changed = proof;
        changed[i][0] ^= 1;
        EXPECT_FALSE(verify_consistency(m, n, root_m, root_n, changed)) << m << " -> " << n << " element " << i;
      }
      auto shorter = proof;
      shorter.pop_back();
      EXPECT_FALSE(verify_consistency(m, n, root_m, root_n, shorter)) << m << " -> " << n;
      if (m + 1 < n) EXPECT_FALSE(verify_consistency(m + 1, n, root_m, root_n, proof)) << m << " -> " << n;
    }
  }
  // A rewritten old history: the old root of another log is not consistent with this one.
  auto other = leaves(10);
  other[2] = "mallory";
  const auto proof = consistency_proof(prefix(h, 20), 10);
  EXPECT_FALSE(verify_consistency(10, 20, merkle_root(other), merkle_root(prefix(d, 20)), proof));
  EXPECT_FALSE(verify_consistency(21, 20, merkle_root(prefix(d, 20)), merkle_root(prefix(d, 20)), {}));
}

}  // namespace
}  // namespace bulwark::registry
