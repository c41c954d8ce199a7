#include "serve/validate.h"

#include <torch/torch.h>

#include <cmath>
#include <cstdio>

#include "core/error.h"

namespace bulwark::serve {
namespace {

std::string shape_text(const std::vector<int64_t>& s) {
  std::string t = "[";
  for (size_t i = 0; i < s.size(); ++i) t += (i ? ", " : "") + std::to_string(s[i]);
  return t + "]";
}

}  // namespace

int64_t checked_element_count(const std::vector<int64_t>& shape, int64_t max_elements, const std::string& where) {
  if (shape.empty()) throw invalid_argument(where + ": shape is empty");
  if (shape.size() > 8) throw invalid_argument(where + ": shape has " + std::to_string(shape.size()) + " dims (max 8)");
  int64_t count = 1;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] < 1) {
      throw invalid_argument(where + ": shape[" + std::to_string(i) + "] = " + std::to_string(shape[i]) +
                             " must be >= 1");
    }
    if (shape[i] > max_elements || count > max_elements / shape[i]) {
      throw Error(ErrorKind::kInvalidArgument,
                  where + ": shape " + shape_text(shape) + " exceeds the limit of " + std::to_string(max_elements) +
                      " elements per tensor (--max-elements)");
    }
    count *= shape[i];
  }
  return count;
}

void check_rows(const std::vector<int64_t>& shape, int64_t max_rows, const std::string& where) {
  if (max_rows > 0 && !shape.empty() && shape[0] > max_rows) {
    throw invalid_argument(where + ": " + std::to_string(shape[0]) + " rows exceed the limit of " +
                           std::to_string(max_rows) + " rows per request (--max-batch)");
  }
}

at::Tensor to_model_input(const InferRequest& r, const model::ModelSpec& spec, int64_t max_elements,
                          int64_t max_rows) {
  if (r.inputs.size() != 1) {
    throw invalid_argument("inputs: the model takes exactly 1 input ('" + std::string(kInputName) + "'), got " +
                           std::to_string(r.inputs.size()));
  }
  const auto& in = r.inputs[0];
  const std::string where = "input '" + in.name + "'";
  if (in.name != kInputName) {
    throw invalid_argument("unknown " + where + " (the model's input is '" + std::string(kInputName) + "')");
  }
  if (in.datatype != "FP32" && in.datatype != "UINT8") {
    throw invalid_argument(where + ": datatype '" + in.datatype + "' is not supported (FP32 or UINT8)");
  }
  const int64_t count = checked_element_count(in.shape, max_elements, where);
  check_rows(in.shape, max_rows, where);
  const auto& chw = spec.input_shape;  // C, H, W
  const std::vector<int64_t> rest(in.shape.begin() + 1, in.shape.end());
  const int64_t per_row = chw[0] * chw[1] * chw[2];
  const bool ok = rest == chw || (chw[0] == 1 && rest == std::vector<int64_t>{chw[1], chw[2]}) ||
                  rest == std::vector<int64_t>{per_row};
  if (!ok) {
    throw invalid_argument(where + ": shape " + shape_text(in.shape) + " does not fit the model's input [N, " +
                           std::to_string(chw[0]) + ", " + std::to_string(chw[1]) + ", " + std::to_string(chw[2]) +
                           "] (also accepted: [N, " + std::to_string(per_row) + "]" +
                           (chw[0] == 1 ? ", [N, " + std::to_string(chw[1]) + ", " + std::to_string(chw[2]) + "]" : "") +
                           ")");
  }
  if (static_cast<int64_t>(in.values.size()) != count) {
    throw invalid_argument(where + ": shape " + shape_text(in.shape) + " holds " + std::to_string(count) +
                           " values, got " + std::to_string(in.values.size()));
  }
  const bool u8 = in.datatype == "UINT8";
  const float lo = u8 ? 0.0f : spec.lo, hi = u8 ? 255.0f : spec.hi;
  const float tol = u8 ? 0.0f : 1e-6f * std::max(1.0f, std::abs(hi - lo));
  for (size_t i = 0; i < in.values.size(); ++i) {
    const float v = in.values[i];
    if (!std::isfinite(v)) throw invalid_argument(where + ": value at index " + std::to_string(i) + " is NaN or Inf");
    if (v < lo - tol || v > hi + tol || (u8 && v != std::floor(v))) {
      char msg[200];
      std::snprintf(msg, sizeof msg, ": value %g at index %zu is outside the %s range [%g, %g]", v, i,
                    u8 ? "UINT8 (integers)" : "model's", lo, hi);
      throw invalid_argument(where + msg);
    }
  }
  auto x = torch::from_blob(const_cast<float*>(in.values.data()), {in.shape[0], chw[0], chw[1], chw[2]},
                            torch::kFloat)
               .clone();
  if (u8) x = spec.lo + x / 255.0f * (spec.hi - spec.lo);
  return x.clamp_(spec.lo, spec.hi);
}

void check_requested_outputs(const InferRequest& r) {
  for (const auto& o : r.outputs) {
    if (o.name != "logits" && o.name != "probabilities" && o.name != "label") {
      throw invalid_argument("output '" + o.name + "' is unknown (known: logits, probabilities, label)");
    }
  }
}

}  // namespace bulwark::serve
