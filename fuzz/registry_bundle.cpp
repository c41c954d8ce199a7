// fuzz/registry_bundle.cpp — a model's signature bundle (registry/signing.h: verify_bundle), the
// Sigstore bundle JSON a registry version or `registry import` brings, checked against a trust list
// holding the fuzz key (registry_key.h). Whatever verifies must describe a signable file list.
#include <string>

#include "fuzz_util.h"
#include "registry/signing.h"
#include "registry_key.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace bulwark;
  const std::string text(reinterpret_cast<const char*>(data), size);
  fuzz::expect_only_errors([&] {
    const registry::VerifiedBundle v = registry::verify_bundle(text, fuzz::fuzz_trust());
    fuzz::check(v.key_id == fuzz::fuzz_signing_key().key_id(), "a verified bundle names the key that signed it");
    fuzz::check(!v.files.empty(), "a verified bundle lists files");
  });
  return 0;
}
