// model/int_pair.h — (height, width) of an int[2] operator argument, as ATen reads it: one value for
// both, or two. Private to the model module's operators (max_pool.cpp, conv2d.cpp).
#pragma once

#include <c10/util/ArrayRef.h>

#include <cstdint>
#include <optional>
#include <utility>

namespace bulwark::model {

// `if_empty` for an empty list; nullopt for lengths other than 0, 1 and 2 (the operator then
// hands the call to ATen, whose error it gives).
inline std::optional<std::pair<int64_t, int64_t>> int_pair(c10::IntArrayRef v,
                                                           std::optional<std::pair<int64_t, int64_t>> if_empty) {
  if (v.empty()) return if_empty;
  if (v.size() == 1) return std::make_pair(v[0], v[0]);
  if (v.size() == 2) return std::make_pair(v[0], v[1]);
  return std::nullopt;
}

}  // namespace bulwark::model
