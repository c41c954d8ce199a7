// fuzz/registry_statement.cpp — the in-toto statement inside a signature bundle, which
// verify_bundle parses only once the signature verifies: the input is the statement, signed here
// with the fuzz key (registry_key.h) and wrapped in a bundle as sign_bundle does, so every input
// reaches the statement parser. A statement that verifies must re-sign to a bundle that verifies
// the same way.
#include <string>

#include <nlohmann/json.hpp>

#include "fuzz_util.h"
#include "registry/signing.h"
#include "registry_key.h"

namespace {

constexpr const char* kPayloadType = "application/vnd.in-toto+json";

std::string bundle_for(const std::string& statement) {
  using namespace bulwark;
  const auto& key = fuzz::fuzz_signing_key();
  const nlohmann::json signature = {
      {"sig", registry::base64_encode(key.sign(registry::dsse_pae(kPayloadType, statement)))}, {"keyid", ""}};
  const nlohmann::json bundle = {
      {"mediaType", "application/vnd.dev.sigstore.bundle.v0.3+json"},
      {"verificationMaterial", {{"publicKey", {{"hint", key.key_id()}}}, {"tlogEntries", nlohmann::json::array()}}},
      {"dsseEnvelope",
       {{"payload", registry::base64_encode(statement)},
        {"payloadType", kPayloadType},
        {"signatures", nlohmann::json::array({signature})}}}};
  return bundle.dump();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace bulwark;
  const std::string statement(reinterpret_cast<const char*>(data), size);
  fuzz::expect_only_errors([&] {
    const registry::VerifiedBundle v = registry::verify_bundle(bundle_for(statement), fuzz::fuzz_trust());
    fuzz::check(!v.files.empty() && v.root_digest.size() == 64, "a verified statement lists files and their root");
    // What the registry would sign for the same model and files verifies to the same content.
    const auto& key = fuzz::fuzz_signing_key();
    const registry::VerifiedBundle again =
        registry::verify_bundle(registry::sign_bundle(key, v.model_name, v.files), fuzz::fuzz_trust());
    fuzz::check(again.model_name == v.model_name && again.files.size() == v.files.size(),
                "a verified statement re-signs to the same model and files");
  });
  return 0;
}
