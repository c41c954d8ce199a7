// fuzz/registry_reference.cpp — model references (registry/store.h): "NAME", "NAME@N",
// "NAME@latest", "NAME@STAGE", with or without "registry:", as `serve --model`, the repository
// API and the CLI take them. A reference that parses names a valid model and prints back to
// itself.
#include <string>

#include "fuzz_util.h"
#include "registry/store.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace bulwark;
  const std::string text(reinterpret_cast<const char*>(data), size);
  fuzz::expect_only_errors([&] {
    const registry::Reference r = registry::parse_reference(text);
    registry::check_model_name(r.model);  // must not throw for a parsed reference
    fuzz::check(r.version == registry::Reference::kLatest || r.version >= 0, "version is latest, a stage or >= 1");
    const registry::Reference back = registry::parse_reference(r.text());
    fuzz::check(back.model == r.model && back.version == r.version && (r.version != 0 || back.stage == r.stage),
                "parse_reference(r.text()) == r");
  });
  fuzz::expect_only_errors([&] { registry::parse_stage(text); });
  return 0;
}
