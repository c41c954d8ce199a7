#include "model/spec.h"

#include "core/error.h"

namespace bulwark::model {

nlohmann::json ModelSpec::to_json() const {
  return {{"format", kSpecFormat}, {"arch", arch},         {"input_shape", input_shape},
          {"value_range", {lo, hi}}, {"class_names", class_names}, {"dataset", dataset},
          {"seed", seed},            {"training", training},       {"hardening", hardening}};
}

ModelSpec ModelSpec::from_json(const nlohmann::json& j, const std::string& where) {
  auto fail = [&](const std::string& what) { return data_format(where + ": spec " + what); };
  if (!j.is_object()) throw fail("is not a JSON object");
  if (j.value("format", "") != kSpecFormat) {
    throw fail("field 'format' must be \"" + std::string(kSpecFormat) + "\"");
  }
  ModelSpec s;
  try {
    s.arch = j.at("arch").get<std::string>();
    s.input_shape = j.at("input_shape").get<std::vector<int64_t>>();
    const auto range = j.at("value_range").get<std::vector<float>>();
    if (range.size() != 2) throw fail("field 'value_range' must have 2 numbers");
    s.lo = range[0];
    s.hi = range[1];
    s.class_names = j.at("class_names").get<std::vector<std::string>>();
    s.dataset = j.value("dataset", "");
    s.seed = j.value("seed", uint64_t{0});
    s.training = j.value("training", nlohmann::json::object());
    s.hardening = j.value("hardening", nlohmann::json::object());
  } catch (const nlohmann::json::exception& e) {
    throw fail(std::string("is malformed: ") + e.what());
  }
  if (s.input_shape.size() != 3) throw fail("field 'input_shape' must be [C, H, W]");
  for (int64_t d : s.input_shape) {
    if (d <= 0 || d > 4096) throw fail("field 'input_shape' has a dimension outside 1..4096");
  }
  if (!(s.lo < s.hi)) throw fail("field 'value_range' must have lo < hi");
  if (s.class_names.empty() || s.class_names.size() > 100000) throw fail("field 'class_names' must have 1..100000 names");
  return s;
}

ModelSpec default_spec(int64_t num_classes) {
  ModelSpec s;
  for (int64_t i = 0; i < num_classes; ++i) s.class_names.push_back(std::to_string(i));
  return s;
}

}  // namespace bulwark::model
