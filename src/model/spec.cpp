#include "model/spec.h"

#include <algorithm>
#include <cmath>
#include <limits>

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
  const auto format = j.find("format");  // j.value() would throw type_error for a non-string
  if (format == j.end() || !format->is_string() || *format != kSpecFormat) {
    throw fail("field 'format' must be \"" + std::string(kSpecFormat) + "\"");
  }
  ModelSpec s;
  try {
    // nlohmann converts a float to an integer type with a static_cast (undefined for 1e300) and
    // a double to float likewise: check types and ranges before every conversion.
    s.arch = j.at("arch").get<std::string>();
    const auto& shape = j.at("input_shape");
    if (!shape.is_array() ||
        !std::all_of(shape.begin(), shape.end(), [](const nlohmann::json& d) { return d.is_number_integer(); })) {
      throw fail("field 'input_shape' must be [C, H, W] integers");
    }
    s.input_shape = shape.get<std::vector<int64_t>>();
    const auto range = j.at("value_range").get<std::vector<double>>();
    if (range.size() != 2) throw fail("field 'value_range' must have 2 numbers");
    for (const double v : range) {
      if (!(std::abs(v) <= std::numeric_limits<float>::max())) throw fail("field 'value_range' must be finite floats");
    }
    s.lo = static_cast<float>(range[0]);
    s.hi = static_cast<float>(range[1]);
    s.class_names = j.at("class_names").get<std::vector<std::string>>();
    s.dataset = j.value("dataset", "");
    if (j.contains("seed") && !j["seed"].is_number_unsigned()) throw fail("field 'seed' must be a non-negative integer");
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
