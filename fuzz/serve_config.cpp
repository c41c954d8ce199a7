// fuzz/serve_config.cpp — `bulwark serve --config` (serve/config.h): load_config_file on a file of
// the input's bytes, whole and as guard.yaml's `serve:` section, then each model and calibration
// value through parse_model_arg as the serve command does.
#include <string>

#include "fuzz_util.h"
#include "serve/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace bulwark;
  static fuzz::ScratchFile file(".yaml");
  const std::string& path = file.write(data, size);
  for (const char* section : {"", "serve"}) {
    fuzz::expect_only_errors([&] {
      for (const auto& e : serve::load_config_file(path, section)) {
        if (e.key != "model" && e.key != "calibration") continue;
        for (const auto& v : e.values) {
          fuzz::expect_only_errors([&] {
            const auto [name, file_path] = serve::parse_model_arg(v);
            fuzz::check(!name.empty() && !file_path.empty(), "NAME=PATH has both halves");
          });
        }
      }
    });
  }
  return 0;
}
