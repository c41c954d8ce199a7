#include "report/detail/fields.h"

#include <cmath>

namespace bulwark::report::detail {

using nlohmann::json;

std::string shown(const json& value) {
  std::string text = value.dump(-1, ' ', false, json::error_handler_t::replace);
  if (text.size() > 40) text = text.substr(0, 37) + "...";
  return text;
}

FieldReader::FieldReader(const json& object, std::string where, std::string prefix)
    : object_(object), where_(std::move(where)), prefix_(std::move(prefix)) {
  if (!object_.is_object()) {
    const std::string what = prefix_.empty() ? "the line" : "'" + prefix_.substr(0, prefix_.size() - 1) + "'";
    throw data_format(where_ + ": " + what + " must be a JSON object, got " + shown(object_));
  }
}

Error FieldReader::error(const char* key, const std::string& message) const {
  return data_format(where_ + ": field '" + prefix_ + key + "' " + message);
}

const json* FieldReader::find(const char* key) const {
  const auto it = object_.find(key);
  return it == object_.end() ? nullptr : &*it;
}

double FieldReader::number(const char* key) const {
  const auto value = nullable_number(key);
  if (!value) throw error(key, "must be a number, got null");
  return *value;
}

std::optional<double> FieldReader::nullable_number(const char* key) const {
  if (find(key) == nullptr) throw error(key, "is missing");
  return optional_number(key);
}

std::optional<double> FieldReader::optional_number(const char* key) const {
  const json* v = find(key);
  if (v == nullptr || v->is_null()) return std::nullopt;
  if (!v->is_number()) throw error(key, "must be a number, got " + shown(*v));
  const double d = v->get<double>();
  if (!std::isfinite(d)) throw error(key, "must be finite, got " + shown(*v));
  return d;
}

int64_t FieldReader::count(const char* key) const {
  const json* v = find(key);
  if (v == nullptr) throw error(key, "is missing");
  if (v->is_number_unsigned() && v->get<uint64_t>() <= static_cast<uint64_t>(INT64_MAX)) return v->get<int64_t>();
  throw error(key, "must be an integer >= 0, got " + shown(*v));
}

std::string FieldReader::string(const char* key, bool required) const {
  const json* v = find(key);
  if (v == nullptr) {
    if (required) throw error(key, "is missing");
    return "";
  }
  if (!v->is_string()) throw error(key, "must be a string, got " + shown(*v));
  return v->get<std::string>();
}

std::string FieldReader::non_empty_string(const char* key) const {
  std::string s = string(key, true);
  if (s.empty()) throw error(key, "must not be empty");
  return s;
}

}  // namespace bulwark::report::detail
