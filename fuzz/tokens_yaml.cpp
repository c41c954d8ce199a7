// fuzz/tokens_yaml.cpp — the tokens file (serve/auth.h, `serve --tokens`): TokenStore::load on a
// file of the input's bytes, then one authorization against what loaded.
#include <string>

#include "fuzz_util.h"
#include "serve/auth.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace bulwark;
  static fuzz::ScratchFile file(".yaml");
  const std::string& path = file.write(data, size);
  fuzz::expect_only_errors([&] {
    const auto store = serve::TokenStore::load(path);
    fuzz::check(store->enabled(), "a loaded tokens file enables authentication");
    // "test"'s SHA-256 is a likely seed entry; any outcome but a crash is fine.
    for (const auto role : {serve::Role::kInfer, serve::Role::kAdmin}) {
      fuzz::expect_only_errors([&] { store->authorize("Bearer test", role); });
    }
  });
  return 0;
}
