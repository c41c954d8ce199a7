// fuzz/registry_key.h — the registry targets' signing key: a P-256 key made for fuzzing only, so
// the seed bundles and notes under corpus/ verify and mutations reach past the signature check.
// It signs nothing else and is trusted nowhere else.
#pragma once

#include <sys/stat.h>

#include <string>

#include "fuzz_util.h"
#include "registry/signing.h"

namespace bulwark::fuzz {

constexpr const char* kFuzzKeyPem =
    "-----BEGIN PRIVATE KEY-----\n"
    "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgwdmlcrChvKokD622\n"
    "X+Ch38/TR75UNEmLQ+PGnYL7+pmhRANCAASV7m4ga/MwZpoRx2p6WX3lnpKgXbeK\n"
    "OE6WP8u/y/RzPV8RecINvS92cId3ba1oGT9hS6OU/5+hLgKf43O2clSD\n"
    "-----END PRIVATE KEY-----\n";
// The checkpoint origin the note seeds are signed for.
constexpr const char* kFuzzLogName = "fuzz.example/log";

// Loaded the way the registry loads keys (SigningKey::load wants a 0600 file).
inline const registry::SigningKey& fuzz_signing_key() {
  static const registry::SigningKey key = [] {
    ScratchFile file(".key");
    const std::string pem = kFuzzKeyPem;
    file.write(reinterpret_cast<const uint8_t*>(pem.data()), pem.size());
    ::chmod(file.path().c_str(), 0600);
    return registry::SigningKey::load(file.path());
  }();
  return key;
}

inline const registry::TrustList& fuzz_trust() {
  static const registry::TrustList trust = [] {
    registry::TrustList t;
    t.add(fuzz_signing_key().public_key());
    return t;
  }();
  return trust;
}

}  // namespace bulwark::fuzz
