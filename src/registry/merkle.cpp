#include "registry/merkle.h"

#include "core/digest.h"
#include "core/error.h"

namespace bulwark::registry {
namespace {

// The largest power of two smaller than n (n >= 2): RFC 6962's split point.
size_t split_point(size_t n) {
  size_t k = 1;
  while (k * 2 < n) k *= 2;
  return k;
}

std::string subtree_root(const std::vector<std::string>& hashes, size_t begin, size_t end) {
  if (end - begin == 1) return hashes[begin];
  const size_t k = split_point(end - begin);
  return merkle_node_hash(subtree_root(hashes, begin, begin + k), subtree_root(hashes, begin + k, end));
}

// RFC 9162 §2.1.4.1 SUBPROOF(m, D[begin:end], b).
void subproof(const std::vector<std::string>& hashes, size_t m, size_t begin, size_t end, bool complete,
              std::vector<std::string>& out) {
  const size_t n = end - begin;
  if (m == n) {
    if (!complete) out.push_back(subtree_root(hashes, begin, end));
    return;
  }
  const size_t k = split_point(n);
  if (m <= k) {
    subproof(hashes, m, begin, begin + k, complete, out);
    out.push_back(subtree_root(hashes, begin + k, end));
  } else {
    subproof(hashes, m - k, begin + k, end, false, out);
    out.push_back(subtree_root(hashes, begin, begin + k));
  }
}

}  // namespace

std::string merkle_leaf_hash(const std::string& data) { return sha256_raw(std::string(1, '\0') + data); }

std::string merkle_node_hash(const std::string& left, const std::string& right) {
  return sha256_raw(std::string(1, '\1') + left + right);
}

std::string merkle_root(const std::vector<std::string>& leaves) {
  if (leaves.empty()) return sha256_raw("");
  std::vector<std::string> hashes;
  hashes.reserve(leaves.size());
  for (const auto& l : leaves) hashes.push_back(merkle_leaf_hash(l));
  return subtree_root(hashes, 0, hashes.size());
}

void MerkleFrontier::append(const std::string& leaf_data) {
  std::string carry = merkle_leaf_hash(leaf_data);
  // Each trailing set bit of `size` is a perfect subtree of the carry's height: merge them.
  for (int64_t s = size; (s & 1) != 0; s >>= 1) {
    carry = merkle_node_hash(subtrees.back(), carry);
    subtrees.pop_back();
  }
  subtrees.push_back(std::move(carry));
  ++size;
}

std::string MerkleFrontier::root() const {
  if (subtrees.empty()) return sha256_raw("");
  // The head folds the subtrees from the smallest (rightmost) up: the RFC's split is always at the
  // largest power of two, which is exactly the leftmost remaining subtree.
  std::string r = subtrees.back();
  for (size_t i = subtrees.size() - 1; i-- > 0;) r = merkle_node_hash(subtrees[i], r);
  return r;
}

std::string MerkleFrontier::serialize() const {
  std::string s = std::to_string(size) + ":";
  for (size_t i = 0; i < subtrees.size(); ++i) s += (i ? "," : "") + hex_encode(subtrees[i]);
  return s;
}

MerkleFrontier MerkleFrontier::parse(const std::string& text) {
  MerkleFrontier f;
  const auto colon = text.find(':');
  const std::string size = text.substr(0, colon);
  if (colon == std::string::npos || size.empty() || size.size() > 15 ||
      size.find_first_not_of("0123456789") != std::string::npos) {
    throw data_format("audit frontier '" + text.substr(0, 40) + "': expected SIZE:HEX,HEX,...");
  }
  f.size = std::stoll(size);
  std::string rest = text.substr(colon + 1);
  for (size_t start = 0; start < rest.size();) {
    size_t end = rest.find(',', start);
    if (end == std::string::npos) end = rest.size();
    const std::string hex = rest.substr(start, end - start);
    if (hex.size() != 64 || hex.find_first_not_of("0123456789abcdef") != std::string::npos) {
      throw data_format("audit frontier: subtree hash '" + hex.substr(0, 70) + "' is not 64 lowercase hex");
    }
    f.subtrees.push_back(hex_decode(hex));
    start = end + 1;
  }
  if (static_cast<int64_t>(f.subtrees.size()) != __builtin_popcountll(static_cast<unsigned long long>(f.size))) {
    throw data_format("audit frontier: " + std::to_string(f.subtrees.size()) + " subtrees for size " +
                      std::to_string(f.size) + " (expected one per set bit)");
  }
  return f;
}

std::vector<std::string> consistency_proof(const std::vector<std::string>& leaf_hashes, size_t m) {
  if (m == 0 || m > leaf_hashes.size()) throw invalid_argument("consistency proof: size " + std::to_string(m) +
                                                               " must be 1.." + std::to_string(leaf_hashes.size()));
  std::vector<std::string> out;
  subproof(leaf_hashes, m, 0, leaf_hashes.size(), true, out);
  return out;
}

bool verify_consistency(uint64_t m, uint64_t n, const std::string& root_m, const std::string& root_n,
                        const std::vector<std::string>& proof) {
  if (m > n) return false;
  if (m == 0) return proof.empty();
  if (m == n) return proof.empty() && root_m == root_n;
  if (proof.empty()) return false;
  std::vector<std::string> path = proof;
  // Step 2: when m is a power of two, the old head is itself a node of the new tree.
  if ((m & (m - 1)) == 0) path.insert(path.begin(), root_m);
  uint64_t fn = m - 1, sn = n - 1;
  while ((fn & 1) != 0) {
    fn >>= 1;
    sn >>= 1;
  }
  std::string fr = path[0], sr = path[0];
  for (size_t i = 1; i < path.size(); ++i) {
    const std::string& c = path[i];
    if (sn == 0) return false;
    if ((fn & 1) != 0 || fn == sn) {
      fr = merkle_node_hash(c, fr);
      sr = merkle_node_hash(c, sr);
      if ((fn & 1) == 0) {
        while ((fn & 1) == 0 && fn != 0) {
          fn >>= 1;
          sn >>= 1;
        }
      }
    } else {
      sr = merkle_node_hash(sr, c);
    }
    fn >>= 1;
    sn >>= 1;
  }
  return fr == root_m && sr == root_n && sn == 0;
}

}  // namespace bulwark::registry
