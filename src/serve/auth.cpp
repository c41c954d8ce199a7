#include "serve/auth.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "core/digest.h"
#include "core/error.h"
#include "serve/detail/yaml.h"

namespace bulwark::serve {
namespace {

Error unauthenticated(const std::string& what) { return Error(ErrorKind::kUnauthenticated, what); }

}  // namespace

const char* to_string(Role r) {
  switch (r) {
    case Role::kInfer: return "infer";
    case Role::kFeedback: return "feedback";
    case Role::kAdmin: return "admin";
    case Role::kMetrics: return "metrics";
  }
  return "?";
}

Role parse_role(const std::string& s, const std::string& where) {
  if (s == "infer") return Role::kInfer;
  if (s == "feedback") return Role::kFeedback;
  if (s == "admin") return Role::kAdmin;
  if (s == "metrics") return Role::kMetrics;
  throw invalid_argument(where + ": unknown role '" + s + "' (known: infer, feedback, admin, metrics)");
}

std::string generate_token() { return random_hex(32); }

std::shared_ptr<TokenStore> TokenStore::from_entries(std::vector<TokenEntry> entries) {
  auto store = std::make_shared<TokenStore>();
  auto& s = *store;
  std::set<std::string> ids;
  for (auto& e : entries) {
    if (!ids.insert(e.id).second) throw invalid_argument("tokens: duplicate id '" + e.id + "'");
    if (s.by_hash_.count(e.sha256_hex)) throw invalid_argument("tokens: duplicate sha256 for '" + e.id + "'");
    s.by_hash_[e.sha256_hex] = e;
  }
  return store;
}

std::shared_ptr<TokenStore> TokenStore::load(const std::string& path) {
  const YAML::Node root = detail::load_yaml_file(path, "--tokens");
  // operator[] on a scalar or a list throws YAML::BadSubscript, not our Error.
  if (!root.IsMap()) throw data_format(path + ": expected a map with a 'tokens' list");
  const auto list = root["tokens"];
  if (!list || !list.IsSequence()) throw data_format(path + ": expected a 'tokens' list");
  std::vector<TokenEntry> entries;
  for (size_t i = 0; i < list.size(); ++i) {
    const auto n = list[i];
    const std::string where = path + ": tokens[" + std::to_string(i) + "]";
    try {
      TokenEntry e;
      if (!n["id"] || n["id"].as<std::string>().empty()) throw data_format(where + ".id is required");
      e.id = n["id"].as<std::string>();
      if (!n["sha256"]) throw data_format(where + ".sha256 is required (hex SHA-256 of the token)");
      e.sha256_hex = n["sha256"].as<std::string>();
      std::transform(e.sha256_hex.begin(), e.sha256_hex.end(), e.sha256_hex.begin(), ::tolower);
      if (e.sha256_hex.size() != 64 || e.sha256_hex.find_first_not_of("0123456789abcdef") != std::string::npos) {
        throw data_format(where + ".sha256 must be 64 hex digits");
      }
      if (!n["roles"] || !n["roles"].IsSequence() || n["roles"].size() == 0) {
        throw data_format(where + ".roles must be a non-empty list");
      }
      for (const auto& r : n["roles"]) e.roles.insert(parse_role(r.as<std::string>(), where + ".roles"));
      if (n["rate_per_s"]) e.rate_per_s = n["rate_per_s"].as<double>();
      if (!(e.rate_per_s >= 0 && e.rate_per_s <= 1e6)) throw data_format(where + ".rate_per_s must be in [0, 1e6]");
      e.burst = n["burst"] ? n["burst"].as<double>() : std::max(1.0, e.rate_per_s);
      if (!(e.burst >= 1 && e.burst <= 1e6)) throw data_format(where + ".burst must be in [1, 1e6]");
      entries.push_back(e);
    } catch (const YAML::Exception& ex) {
      throw data_format(where + ": " + ex.what());
    }
  }
  if (entries.empty()) throw data_format(path + ": 'tokens' is empty (omit --tokens to disable authentication)");
  return from_entries(std::move(entries));
}

const TokenEntry& TokenStore::entry_for(const std::string& authorization) const {
  const std::string prefix = "Bearer ";
  if (authorization.empty()) throw unauthenticated("missing bearer token (Authorization: Bearer <token>)");
  if (authorization.compare(0, prefix.size(), prefix) != 0 || authorization.size() == prefix.size()) {
    throw unauthenticated("Authorization must be 'Bearer <token>'");
  }
  const auto it = by_hash_.find(sha256_hex(authorization.substr(prefix.size())));
  if (it == by_hash_.end()) throw unauthenticated("unknown token");
  return it->second;
}

bool TokenStore::grants(Role role) const {
  for (const auto& [hash, e] : by_hash_) {
    if (e.roles.count(role)) return true;
  }
  return false;
}

void TokenStore::authenticate(const std::string& authorization) const {
  if (enabled()) entry_for(authorization);
}

bool TokenStore::has_role(const std::string& authorization, Role role) const {
  if (!enabled() || authorization.empty()) return false;
  return entry_for(authorization).roles.count(role) > 0;
}

Principal TokenStore::authorize(const std::string& authorization, Role role) {
  if (!enabled()) {
    // No tokens: anyone may read and infer, nobody is admin (the repository API says so), and
    // nobody may label answers: labels drive the accuracy alarm and the loop's roll-back.
    if (role == Role::kFeedback) {
      throw Error(ErrorKind::kPermissionDenied,
                  "feedback needs a token with the 'feedback' role: start the server with --tokens");
    }
    return Principal{};
  }
  const auto& e = entry_for(authorization);
  if (!e.roles.count(role)) {
    throw Error(ErrorKind::kPermissionDenied,
                "token '" + e.id + "' lacks the '" + std::string(to_string(role)) + "' role");
  }
  if (e.rate_per_s > 0) {
    std::lock_guard<std::mutex> lock(mu_);
    const auto now = std::chrono::steady_clock::now();
    auto [b, fresh] = buckets_.try_emplace(e.id, Bucket{e.burst, now});
    auto& bucket = b->second;
    if (!fresh) {
      const double dt = std::chrono::duration<double>(now - bucket.last).count();
      bucket.tokens = std::min(e.burst, bucket.tokens + dt * e.rate_per_s);
      bucket.last = now;
    }
    if (bucket.tokens < 1.0) {
      char msg[160];
      std::snprintf(msg, sizeof msg, "token '%s' is over its rate limit of %g requests/s (burst %g)", e.id.c_str(),
                    e.rate_per_s, e.burst);
      throw RateLimitedError(msg, (1.0 - bucket.tokens) / e.rate_per_s);
    }
    bucket.tokens -= 1.0;
  }
  return Principal{e.id, e.roles.count(Role::kAdmin) > 0};
}

}  // namespace bulwark::serve
