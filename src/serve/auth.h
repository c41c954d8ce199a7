// serve/auth.h — bearer tokens with roles and per-token rate limits.
//
// The tokens file (YAML) stores only SHA-256 hashes of tokens, never the tokens:
//   tokens:
//     - id: dashboard          # what logs and metrics show
//       sha256: 9f86d08...     # hex SHA-256 of the secret token
//       roles: [infer, feedback, admin]   # metrics: the detector and loop series on /metrics
//       rate_per_s: 50         # optional token bucket; 0 or absent = unlimited
//       burst: 100             # optional, default max(1, rate_per_s)
// `bulwark token` prints a fresh token and its entry. Thread-safe: authorize() may be called from
// any request thread; replace() swaps the whole store (SIGHUP).
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "core/digest.h"
#include "core/error.h"
#include "serve/types.h"

namespace bulwark::serve {

enum class Role { kInfer, kFeedback, kAdmin, kMetrics };
const char* to_string(Role r);
Role parse_role(const std::string& s, const std::string& where);

struct TokenEntry {
  std::string id;
  std::string sha256_hex;
  std::set<Role> roles;
  double rate_per_s = 0;  // 0 = unlimited
  double burst = 0;
};

// Thrown when a token is over its rate; frontends answer 429 with Retry-After.
class RateLimitedError : public Error {
 public:
  RateLimitedError(const std::string& what, double retry_after_s)
      : Error(ErrorKind::kResourceExhausted, what), retry_after_s_(retry_after_s) {}
  double retry_after_s() const { return retry_after_s_; }

 private:
  double retry_after_s_;
};

// Hex SHA-256 of a string (core/digest.h).
using bulwark::sha256_hex;
// A fresh random token: 32 bytes from OpenSSL's CSPRNG, hex.
std::string generate_token();

class TokenStore {
 public:
  // Empty store: authentication disabled; every request is "anonymous": infer and read, no admin, no feedback.
  TokenStore() = default;
  // Throws naming the file and the entry on any malformed field.
  static std::shared_ptr<TokenStore> load(const std::string& path);
  static std::shared_ptr<TokenStore> from_entries(std::vector<TokenEntry> entries);

  bool enabled() const { return !by_hash_.empty(); }
  // Whether any token has `role` (none when auth is off).
  bool grants(Role role) const;
  // Checks the Authorization header value ("Bearer <token>") for `role`: throws kUnauthenticated
  // (missing or unknown token), kPermissionDenied (known token without the role) or
  // RateLimitedError (over its rate). Without tokens every caller is an anonymous non-admin
  // principal, refused only the feedback role.
  Principal authorize(const std::string& authorization, Role role);
  // Only that the header names a known token (any role, no rate charged): what a frontend checks
  // before it reads a request's body. Throws kUnauthenticated; without tokens, never.
  void authenticate(const std::string& authorization) const;
  // Whether the header names a token with `role`: false without a header or without tokens;
  // throws kUnauthenticated for a token that is not known.
  bool has_role(const std::string& authorization, Role role) const;

 private:
  const TokenEntry& entry_for(const std::string& authorization) const;
  struct Bucket {
    double tokens = 0;
    std::chrono::steady_clock::time_point last;
  };
  std::map<std::string, TokenEntry> by_hash_;
  std::mutex mu_;  // guards buckets_
  std::map<std::string, Bucket> buckets_;
};

}  // namespace bulwark::serve
