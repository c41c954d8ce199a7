// fuzz/model_spec.cpp — the model spec (model/spec.h), the bulwark.json a model archive or its
// sidecar carries: parsed as Model::load parses it, then ModelSpec::from_json. A spec that loads
// must survive its own round trip (to_json, from_json) unchanged.
#include <string>

#include <nlohmann/json.hpp>

#include "fuzz_util.h"
#include "model/spec.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace bulwark;
  const std::string text(reinterpret_cast<const char*>(data), size);
  fuzz::expect_only_errors([&] {
    // As in Model::load (model.cpp).
    const auto j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded()) throw data_format("spec (bulwark.json) is not valid JSON");
    const model::ModelSpec s = model::ModelSpec::from_json(j, "fuzz");
    const model::ModelSpec again = model::ModelSpec::from_json(s.to_json(), "round trip");
    fuzz::check(again.arch == s.arch && again.input_shape == s.input_shape && again.lo == s.lo && again.hi == s.hi &&
                    again.class_names == s.class_names && again.dataset == s.dataset && again.seed == s.seed,
                "a loaded spec survives to_json/from_json");
    fuzz::check(s.num_classes() >= 1, "a loaded spec has classes");
  });
  return 0;
}
