#include "model/spec.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <limits>

#include "core/error.h"

namespace bulwark::model {

nlohmann::json ModelSpec::to_json() const {
  nlohmann::json j = {{"format", kSpecFormat}, {"arch", arch},         {"input_shape", input_shape},
          {"value_range", {lo, hi}}, {"class_names", class_names}, {"dataset", dataset},
          {"seed", seed},            {"training", training},       {"hardening", hardening}};
  if (normalises()) {
    j["normalize"] = {{"mean", mean}, {"std", std}};
  }
  if (!feature_layer.empty()) j["feature_layer"] = feature_layer;
  return j;
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
    if (j.contains("feature_layer")) {
      if (!j["feature_layer"].is_string()) throw fail("field 'feature_layer' must be a string");
      s.feature_layer = j["feature_layer"].get<std::string>();
      try {
        check_feature_layer(s.feature_layer, where + ": spec field 'feature_layer'");
      } catch (const Error& e) {
        throw data_format(e.what());
      }
    }
    if (j.contains("normalize")) {
      const auto& n = j["normalize"];
      if (!n.is_object() || !n.contains("mean") || !n.contains("std")) {
        throw fail("field 'normalize' must be {\"mean\": [...], \"std\": [...]}");
      }
      for (const char* key : {"mean", "std"}) {
        const auto& v = n[key];
        if (!v.is_array() || !std::all_of(v.begin(), v.end(), [](const nlohmann::json& x) { return x.is_number(); })) {
          throw fail(std::string("field 'normalize.") + key + "' must be an array of numbers");
        }
        for (const auto& x : v) {
          if (!(std::abs(x.get<double>()) <= 1e6)) throw fail(std::string("field 'normalize.") + key + "' must be finite");
        }
      }
      s.mean = n["mean"].get<std::vector<float>>();
      s.std = n["std"].get<std::vector<float>>();
      if (s.mean.empty() || s.std.size() != s.mean.size()) {
        throw fail("field 'normalize' must have one mean and one std per input channel (" +
                   std::to_string(s.input_shape.size() == 3 ? s.input_shape[0] : 0) + ")");
      }
    }
  } catch (const nlohmann::json::exception& e) {
    throw fail(std::string("is malformed: ") + e.what());
  }
  if (s.input_shape.size() != 3) throw fail("field 'input_shape' must be [C, H, W]");
  for (int64_t d : s.input_shape) {
    if (d <= 0 || d > 4096) throw fail("field 'input_shape' has a dimension outside 1..4096");
  }
  if (!(s.lo < s.hi)) throw fail("field 'value_range' must have lo < hi");
  if (s.normalises()) {
    if (s.mean.size() != static_cast<size_t>(s.input_shape[0]) || s.std.size() != s.mean.size()) {
      throw fail("field 'normalize' must have one mean and one std per input channel (" +
                 std::to_string(s.input_shape[0]) + ")");
    }
    for (const float v : s.std) {
      if (!(v > 0.0f)) throw fail("field 'normalize.std' must be positive");
    }
  }
  if (s.class_names.empty() || s.class_names.size() > 100000) throw fail("field 'class_names' must have 1..100000 names");
  return s;
}

void check_feature_layer(const std::string& name, const std::string& what) {
  bool ok = !name.empty() && name.size() <= 256 && name.front() != '.' && name.back() != '.' &&
            name.find("..") == std::string::npos;
  for (const char c : name) ok = ok && (std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.');
  if (!ok) {
    throw invalid_argument(what + " must be a submodule's dotted name (letters, digits, '_', '.'; at most 256), e.g. "
                                  "layer4 or layer4.1, got '" + name.substr(0, 64) + "'");
  }
}

ModelSpec default_spec(int64_t num_classes) {
  ModelSpec s;
  for (int64_t i = 0; i < num_classes; ++i) s.class_names.push_back(std::to_string(i));
  return s;
}

std::vector<int64_t> parse_shape(const std::string& text, const std::string& flag) {
  std::vector<int64_t> dims;
  std::string cur;
  auto push = [&] {
    if (cur.empty() || cur.size() > 5 || cur.find_first_not_of("0123456789") != std::string::npos) {
      throw invalid_argument(flag + " '" + text + "' must be C,H,W (e.g. 3,32,32)");
    }
    dims.push_back(std::stoll(cur));
    cur.clear();
  };
  for (const char c : text) {
    if (c == ',' || c == 'x') push();
    else cur.push_back(c);
  }
  push();
  if (dims.size() != 3) throw invalid_argument(flag + " '" + text + "' must have 3 numbers C,H,W (e.g. 3,32,32)");
  for (const int64_t d : dims) {
    if (d < 1 || d > 4096) throw invalid_argument(flag + " '" + text + "': each of C,H,W must be in 1..4096");
  }
  return dims;
}

std::vector<float> parse_floats(const std::string& text, const std::string& flag) {
  std::vector<float> out;
  size_t start = 0;
  while (start <= text.size()) {
    const auto end = std::min(text.find(',', start), text.size());
    const std::string item = text.substr(start, end - start);
    size_t used = 0;
    double v = 0;
    try {
      v = std::stod(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (item.empty() || used != item.size() || !(std::abs(v) <= 1e6)) {
      throw invalid_argument(flag + " '" + text + "': '" + item + "' is not a finite number");
    }
    out.push_back(static_cast<float>(v));
    start = end + 1;
  }
  return out;
}

}  // namespace bulwark::model
