// fuzz/registry_checkpoint.cpp — the audit log's signed checkpoints (registry/signing.h open_note,
// registry/audit.h parse_checkpoint_body), as `audit verify` reads the registry's checkpoint and
// one kept elsewhere, and the base64 they carry. Per input:
//  - the input as a note: open_note, then the checkpoint body it returns;
//  - the input as a note body: signed with the fuzz key (registry_key.h), it must open to itself;
//  - the input as a checkpoint body, and as base64 (one encoding per byte string: decode then
//    encode gives the input back).
#include <string>

#include "fuzz_util.h"
#include "registry/audit.h"
#include "registry/signing.h"
#include "registry_key.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace bulwark;
  const std::string text(reinterpret_cast<const char*>(data), size);
  const auto& key = fuzz::fuzz_signing_key();
  static const registry::PublicKey pub = key.public_key();

  fuzz::expect_only_errors([&] {
    const std::string body = registry::open_note(text, fuzz::kFuzzLogName, pub);
    fuzz::check(text.compare(0, body.size(), body) == 0, "an opened note's body is its prefix");
    registry::parse_checkpoint_body(body);
  });
  fuzz::expect_only_errors([&] {
    const std::string note = registry::sign_note(text, fuzz::kFuzzLogName, key);
    fuzz::check(registry::open_note(note, fuzz::kFuzzLogName, pub) == text, "a signed note opens to its body");
  });
  fuzz::expect_only_errors([&] {
    const registry::Checkpoint cp = registry::parse_checkpoint_body(text);
    fuzz::check(cp.size >= 0 && cp.root_hex.size() == 64, "a checkpoint has a size and a 32-byte root");
  });
  fuzz::expect_only_errors([&] {
    const std::string bytes = registry::base64_decode(text);
    fuzz::check(registry::base64_encode(bytes) == text, "base64 has one encoding per byte string");
  });
  return 0;
}
