// control/detail/controller_util.h — small helpers the controller's files share (controller.cpp:
// the loop, its states and recovery; controller_steps.cpp: the long steps). Private to control.
#pragma once

#include <cmath>
#include <cstdio>
#include <string>

#include "serve/core.h"

namespace bulwark::control::detail {

inline double now_s() { return serve::unix_now_s(); }

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
