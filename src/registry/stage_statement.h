// registry/stage_statement.h — signed state, not just signed files: every stage change is a
// statement (registry, model, a per-model counter, the action, and the model's resulting
// production and staging versions, each bound to the digest of its file list), signed by an
// operator key with DSSE as the model signatures are. Servers and the guard follow these statements,
// not the `versions.stage` column: a stage moved by SQL, a deleted statement (the counter goes
// back) or a downgrade that is not a signed rollback is refused.
//
// Thread-safety: free functions and plain values.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "registry/signing.h"

namespace bulwark::registry {

inline constexpr const char* kStagePayloadType = "application/vnd.bulwark.stage-statement+json";

struct StageSlot {
  int64_t version = 0;
  std::string files_sha256;  // SHA-256 of the version's file list as JSON (name -> object digest)
};

struct StageStatement {
  std::string registry;  // the log origin
  std::string model;
  int64_t counter = 0;   // 1, 2, ... per model
  std::string action;    // "promote" or "rollback" (an archive is a promote to archived)
  int64_t version = 0;   // the version the change was about
  std::string stage;     // the stage it moved to
  std::optional<StageSlot> production, staging;  // the model's stages after the change
  std::string time, actor;

  std::string payload() const;  // canonical JSON (sorted keys), what is signed
  static StageStatement parse(const std::string& payload);  // throws SignatureError("stage-statement")
  const std::optional<StageSlot>& slot(const std::string& stage_name) const;
};

// SHA-256 hex of a version's file list ({"model.pt": "<sha256>", ...}) serialised as canonical JSON.
std::string files_sha256(const std::map<std::string, std::string>& files);

// base64 of the DER signature over DSSE PAE(kStagePayloadType, payload).
std::string sign_stage_statement(const SigningKey& key, const std::string& payload);
// Checks the signature with the key `key_id` from `trust`; throws SignatureError "untrusted-key" or
// "signature" naming the model and counter.
void verify_stage_signature(const std::string& payload, const std::string& signature_b64, const std::string& key_id,
                            const TrustList& trust, const std::string& what);

}  // namespace bulwark::registry
