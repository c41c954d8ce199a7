// registry/merkle.h — RFC 6962 / RFC 9162 Merkle tree hashing for the audit log: the tree head of a
// list of leaves, a compact frontier that extends the head one leaf at a time (appending never
// re-reads the log), and consistency proofs between two tree sizes, so a verifier holding only two
// signed roots (a witnessed checkpoint and today's) can tell that the newer log extends the older.
//
// Hashes are raw 32-byte SHA-256 strings. Leaves hash as SHA-256(0x00 || data), interior nodes as
// SHA-256(0x01 || left || right); the empty tree is SHA-256("").
//
// Thread-safety: plain values and free functions.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace bulwark::registry {

std::string merkle_leaf_hash(const std::string& data);
std::string merkle_node_hash(const std::string& left, const std::string& right);

// RFC 6962 Merkle tree hash over leaf inputs (each leaf hashed as SHA-256(0x00 || data)).
std::string merkle_root(const std::vector<std::string>& leaves);

// The roots of the perfect subtrees a tree of `size` leaves decomposes into, largest (leftmost)
// first: one per set bit of `size`. Enough to append a leaf and to compute the tree head.
struct MerkleFrontier {
  int64_t size = 0;
  std::vector<std::string> subtrees;

  void append(const std::string& leaf_data);
  std::string root() const;
  // "size:hex,hex,..." for storage; parse throws data_format naming what is wrong.
  std::string serialize() const;
  static MerkleFrontier parse(const std::string& text);
};

// RFC 9162 §2.1.4.1 PROOF(m, D[n]) over the leaf hashes of D[n] (n = leaf_hashes.size()), 0 < m <= n.
std::vector<std::string> consistency_proof(const std::vector<std::string>& leaf_hashes, size_t m);
// RFC 9162 §2.1.4.2: true when `proof` shows the tree of size `m` with head `root_m` is a prefix of
// the tree of size `n` with head `root_n`. m == 0 is trivially consistent; m > n never is.
bool verify_consistency(uint64_t m, uint64_t n, const std::string& root_m, const std::string& root_n,
                        const std::vector<std::string>& proof);

}  // namespace bulwark::registry
