// control/detail/controller_util.h — small helpers the controller's files share (controller.cpp:
// the loop, its states and recovery; controller_steps.cpp: the long steps). Private to control.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "serve/core.h"

namespace bulwark::control::detail {

inline double now_s() { return serve::unix_now_s(); }

inline bool contains(const std::vector<std::string>& v, const std::string& x) {
  return std::find(v.begin(), v.end(), x) != v.end();
}

inline std::string secs(double x) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3g s", x);
  return buf;
}

inline std::string pct(double x) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f%%", 100 * x);
  return buf;
}

}  // namespace bulwark::control::detail
