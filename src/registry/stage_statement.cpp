#include "registry/stage_statement.h"

#include "core/digest.h"

namespace bulwark::registry {
namespace {

using nlohmann::json;

json slot_json(const std::optional<StageSlot>& s) {
  if (!s) return nullptr;
  return {{"version", s->version}, {"files_sha256", s->files_sha256}};
}

std::optional<StageSlot> slot_from(const json& j) {
  if (j.is_null()) return std::nullopt;
  return StageSlot{j.at("version").get<int64_t>(), j.at("files_sha256").get<std::string>()};
}

}  // namespace

std::string StageStatement::payload() const {
  const json j{{"_type", "https://bulwark.dev/StageStatement/v1"},
               {"registry", registry},
               {"model", model},
               {"counter", counter},
               {"action", action},
               {"version", version},
               {"stage", stage},
               {"stages", {{"production", slot_json(production)}, {"staging", slot_json(staging)}}},
               {"time", time},
               {"actor", actor}};
  return j.dump();
}

StageStatement StageStatement::parse(const std::string& payload) {
  try {
    const json j = json::parse(payload);
    if (j.at("_type") != "https://bulwark.dev/StageStatement/v1") throw std::invalid_argument("_type");
    StageStatement s;
    s.registry = j.at("registry").get<std::string>();
    s.model = j.at("model").get<std::string>();
    s.counter = j.at("counter").get<int64_t>();
    s.action = j.at("action").get<std::string>();
    s.version = j.at("version").get<int64_t>();
    s.stage = j.at("stage").get<std::string>();
    s.production = slot_from(j.at("stages").at("production"));
    s.staging = slot_from(j.at("stages").at("staging"));
    s.time = j.at("time").get<std::string>();
    s.actor = j.at("actor").get<std::string>();
    return s;
  } catch (const std::exception& e) {
    throw SignatureError("stage-statement", std::string("a stage statement is malformed: ") + e.what());
  }
}

const std::optional<StageSlot>& StageStatement::slot(const std::string& stage_name) const {
  if (stage_name == "staging") return staging;
  return production;
}

std::string files_sha256(const std::map<std::string, std::string>& files) { return sha256_hex(json(files).dump()); }

std::string sign_stage_statement(const SigningKey& key, const std::string& payload) {
  return base64_encode(key.sign(dsse_pae(kStagePayloadType, payload)));
}

void verify_stage_signature(const std::string& payload, const std::string& signature_b64, const std::string& key_id,
                            const TrustList& trust, const std::string& what) {
  const PublicKey* key = trust.find(key_id);
  if (key == nullptr) {
    throw SignatureError("untrusted-key", what + " is signed by key " + key_id.substr(0, 16) +
                                              "..., which is not among the trusted keys");
  }
  bool ok = false;
  try {
    ok = key->verify(dsse_pae(kStagePayloadType, payload), base64_decode(signature_b64));
  } catch (const std::exception&) {
    ok = false;
  }
  if (!ok) throw SignatureError("signature", what + ": the signature does not verify (statement or signature altered)");
}

}  // namespace bulwark::registry
