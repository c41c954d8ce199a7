// report/detail/fields.h — typed, required-or-optional reads of one JSON object's fields, with
// errors of the one shape every input uses: "WHERE: field 'NAME' must be ..., got ...".
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "core/error.h"

namespace bulwark::report::detail {

class FieldReader {
 public:
  // where: "events.jsonl:12" or "pgd.json"; prefix: "results[2]." for nested objects.
  // Throws data_format when `object` is not a JSON object.
  FieldReader(const nlohmann::json& object, std::string where, std::string prefix = "");

  double number(const char* key) const;                          // required, finite
  std::optional<double> nullable_number(const char* key) const;  // required, finite or null
  std::optional<double> optional_number(const char* key) const;  // missing or null: nullopt
  int64_t count(const char* key) const;                          // required integer >= 0
  std::string string(const char* key, bool required) const;      // missing: "" unless required
  std::string non_empty_string(const char* key) const;           // required

  // data_format("WHERE: field 'PREFIXkey' MESSAGE").
  Error error(const char* key, const std::string& message) const;
  const nlohmann::json* find(const char* key) const;  // nullptr when missing

 private:
  const nlohmann::json& object_;
  std::string where_, prefix_;
};

// A value as it appears in a message: the JSON text, shortened to 40 characters.
std::string shown(const nlohmann::json& value);

}  // namespace bulwark::report::detail
