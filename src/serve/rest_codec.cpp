#include "serve/rest_codec.h"

#include <cstring>
#include <sstream>

#include "core/error.h"
#include "serve/core.h"

namespace bulwark::serve {
namespace {

using nlohmann::json;

const json& field(const json& j, const char* name, const std::string& where) {
  const auto it = j.find(name);
  if (it == j.end()) throw invalid_argument(where + ": '" + name + "' is required");
  return *it;
}

std::string string_field(const json& j, const char* name, const std::string& where) {
  const auto& v = field(j, name, where);
  if (!v.is_string()) throw invalid_argument(where + "." + name + " must be a string");
  return v.get<std::string>();
}

std::vector<int64_t> shape_field(const json& j, const std::string& where) {
  const auto& s = field(j, "shape", where);
  if (!s.is_array()) throw invalid_argument(where + ".shape must be an array of integers");
  std::vector<int64_t> out;
  for (const auto& d : s) {
    if (!d.is_number_integer()) throw invalid_argument(where + ".shape must be an array of integers");
    out.push_back(d.get<int64_t>());
  }
  return out;
}

// Flattens nested arrays of numbers (no recursion: an explicit stack), stopping at `limit` values.
std::vector<float> flatten_numbers(const json& data, int64_t limit, const std::string& where) {
  std::vector<float> out;
  if (!data.is_array()) throw invalid_argument(where + ".data must be an array");
  std::vector<std::pair<const json*, size_t>> stack{{&data, 0}};
  while (!stack.empty()) {
    auto& [node, i] = stack.back();
    if (i == node->size()) {
      stack.pop_back();
      continue;
    }
    const json& v = (*node)[i++];
    if (v.is_array()) {
      stack.emplace_back(&v, 0);
    } else if (v.is_number()) {
      if (static_cast<int64_t>(out.size()) >= limit) {
        throw invalid_argument(where + ".data has more values than its shape holds (" + std::to_string(limit) + ")");
      }
      out.push_back(v.get<float>());
    } else {
      throw invalid_argument(where + ".data must hold numbers only, found " + std::string(v.type_name()));
    }
  }
  return out;
}

bool bool_parameter(const json& obj, const char* name, const std::string& where) {
  const auto p = obj.find("parameters");
  if (p == obj.end()) return false;
  if (!p->is_object()) throw invalid_argument(where + ".parameters must be an object");
  const auto v = p->find(name);
  if (v == p->end()) return false;
  if (!v->is_boolean()) throw invalid_argument(where + ".parameters." + name + " must be a boolean");
  return v->get<bool>();
}

std::optional<int64_t> binary_size(const json& input, const std::string& where) {
  const auto p = input.find("parameters");
  if (p == input.end()) return std::nullopt;
  if (!p->is_object()) throw invalid_argument(where + ".parameters must be an object");
  const auto v = p->find("binary_data_size");
  if (v == p->end()) return std::nullopt;
  if (!v->is_number_integer() || v->get<int64_t>() < 0) {
    throw invalid_argument(where + ".parameters.binary_data_size must be a non-negative integer");
  }
  return v->get<int64_t>();
}

size_t element_size(const std::string& datatype) { return datatype == "UINT8" ? 1 : 4; }

}  // namespace

InferRequest parse_infer_request(const std::string& body, std::optional<size_t> json_length,
                                 const RestLimits& limits) {
  const size_t header_len = json_length.value_or(body.size());
  if (header_len > body.size()) {
    throw invalid_argument("Inference-Header-Content-Length " + std::to_string(header_len) +
                           " exceeds the body's " + std::to_string(body.size()) + " bytes");
  }
  json j;
  try {
    // The callback sees every value as it is parsed: it aborts deep documents, and documents
    // holding more values than the model could take, before they are built.
    const int max_depth = limits.max_json_depth;
    const int64_t max_values = limits.max_rows > 0 && limits.values_per_row > 0
                                   ? limits.max_rows * limits.values_per_row + kJsonOverheadValues
                                   : 0;
    int64_t values = 0;
    j = json::parse(body.begin(), body.begin() + static_cast<std::ptrdiff_t>(header_len),
                    [&](int depth, json::parse_event_t event, json&) {
                      if (depth > max_depth) {
                        throw invalid_argument("request JSON nests deeper than " + std::to_string(max_depth) +
                                               " levels");
                      }
                      const bool counts = event != json::parse_event_t::object_end &&
                                          event != json::parse_event_t::array_end;
                      if (max_values > 0 && counts && ++values > max_values) {
                        throw invalid_argument(
                            "request JSON holds more than " + std::to_string(max_values) +
                            " values: the model takes at most " + std::to_string(limits.max_rows) + " rows of " +
                            std::to_string(limits.values_per_row) + " values per request (--max-batch), and " +
                            std::to_string(kJsonOverheadValues) + " more for the rest of the document");
                      }
                      return true;
                    });
  } catch (const json::exception& e) {
    throw invalid_argument(std::string("request body is not valid JSON: ") + e.what());
  }
  if (!j.is_object()) throw invalid_argument("request body must be a JSON object");
  InferRequest r;
  if (j.contains("id")) {
    if (!j["id"].is_string()) throw invalid_argument("id must be a string");
    r.id = j["id"].get<std::string>();
    if (r.id.size() > 256) throw invalid_argument("id is longer than 256 characters");
  }
  r.binary_outputs = bool_parameter(j, "binary_data_output", "request");
  const auto& inputs = field(j, "inputs", "request");
  if (!inputs.is_array() || inputs.empty()) throw invalid_argument("inputs must be a non-empty array");
  size_t offset = header_len;
  for (size_t k = 0; k < inputs.size(); ++k) {
    const auto& in = inputs[k];
    const std::string where = "inputs[" + std::to_string(k) + "]";
    if (!in.is_object()) throw invalid_argument(where + " must be an object");
    InferInput x;
    x.name = string_field(in, "name", where);
    x.datatype = string_field(in, "datatype", where);
    x.shape = shape_field(in, where);
    const std::string named = "input '" + x.name + "'";
    const int64_t count = checked_element_count(x.shape, limits.max_elements, named);
    check_rows(x.shape, limits.max_rows, named);
    if (const auto bytes = binary_size(in, where)) {
      if (x.datatype != "FP32" && x.datatype != "UINT8") {
        throw invalid_argument(named + ": datatype '" + x.datatype + "' is not supported (FP32 or UINT8)");
      }
      if (in.contains("data")) throw invalid_argument(named + ": give 'data' or binary_data_size, not both");
      const size_t want = static_cast<size_t>(count) * element_size(x.datatype);
      if (static_cast<size_t>(*bytes) != want) {
        throw invalid_argument(named + ": binary_data_size " + std::to_string(*bytes) + " != " + std::to_string(want) +
                               " bytes for shape and datatype");
      }
      if (offset + want > body.size()) {
        throw invalid_argument(named + ": binary data runs past the end of the body");
      }
      x.values.resize(static_cast<size_t>(count));
      if (x.datatype == "FP32") {
        std::memcpy(x.values.data(), body.data() + offset, want);  // little-endian host (x86_64, arm64)
      } else {
        for (int64_t i = 0; i < count; ++i) x.values[i] = static_cast<unsigned char>(body[offset + i]);
      }
      offset += want;
    } else {
      x.values = flatten_numbers(field(in, "data", where), count, named);
    }
    r.inputs.push_back(std::move(x));
  }
  if (offset != body.size()) {
    throw invalid_argument(std::to_string(body.size() - offset) +
                           " bytes follow the JSON that no input's binary_data_size accounts for");
  }
  if (j.contains("outputs")) {
    const auto& outs = j["outputs"];
    if (!outs.is_array()) throw invalid_argument("outputs must be an array");
    for (size_t k = 0; k < outs.size(); ++k) {
      const std::string where = "outputs[" + std::to_string(k) + "]";
      if (!outs[k].is_object()) throw invalid_argument(where + " must be an object");
      r.outputs.push_back({string_field(outs[k], "name", where), bool_parameter(outs[k], "binary_data", where)});
    }
  }
  return r;
}

json guard_parameters(const InferResponse& r) {
  json p = json::object();
  if (!r.feedback_id.empty()) p["feedback_id"] = r.feedback_id;
  if (r.attack_scores.empty()) return p;
  float max_score = 0;
  int64_t flagged = 0;
  std::ostringstream scores;
  for (size_t i = 0; i < r.attack_scores.size(); ++i) {
    max_score = std::max(max_score, r.attack_scores[i]);
    flagged += r.attack_flags[i] ? 1 : 0;
    scores << (i ? "," : "") << r.attack_scores[i];
  }
  p["attack_score"] = max_score;
  p["attack_flagged"] = flagged > 0;
  p["attack_flagged_count"] = flagged;
  p["attack_scores"] = scores.str();
  p["attack_scorer"] = r.scorer;
  return p;
}

std::string format_infer_response(const InferResponse& r, std::optional<size_t>* json_length) {
  json j{{"model_name", r.model}, {"model_version", r.version}};
  if (!r.id.empty()) j["id"] = r.id;
  const auto params = guard_parameters(r);
  if (!params.empty()) j["parameters"] = params;
  std::string tail;
  json outputs = json::array();
  for (const auto& o : r.outputs) {
    json out{{"name", o.name}, {"datatype", o.datatype}, {"shape", o.shape}};
    if (o.binary) {
      const size_t before = tail.size();
      if (o.datatype == "FP32") {
        tail.append(reinterpret_cast<const char*>(o.fp32.data()), o.fp32.size() * sizeof(float));
      } else {
        for (const auto& s : o.bytes) {  // Triton's BYTES layout: 4-byte little-endian length, then bytes
          const uint32_t n = static_cast<uint32_t>(s.size());
          tail.append(reinterpret_cast<const char*>(&n), 4);
          tail += s;
        }
      }
      out["parameters"] = {{"binary_data_size", tail.size() - before}};
    } else if (o.datatype == "FP32") {
      out["data"] = o.fp32;
    } else {
      out["data"] = o.bytes;
    }
    outputs.push_back(std::move(out));
  }
  j["outputs"] = std::move(outputs);
  auto text = j.dump(-1, ' ', false, json::error_handler_t::replace);
  if (tail.empty()) {
    *json_length = std::nullopt;
    return text;
  }
  *json_length = text.size();
  return text + tail;
}

json model_metadata_json(const ModelMetadata& md) {
  auto tensors = [](const std::vector<TensorMetadata>& ts) {
    json a = json::array();
    for (const auto& t : ts) a.push_back({{"name", t.name}, {"datatype", t.datatype}, {"shape", t.shape}});
    return a;
  };
  return {{"name", md.name},
          {"versions", md.versions},
          {"platform", md.platform},
          {"inputs", tensors(md.inputs)},
          {"outputs", tensors(md.outputs)}};
}

json error_json(const std::string& message) { return {{"error", message}}; }

}  // namespace bulwark::serve
