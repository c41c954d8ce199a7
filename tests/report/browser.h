// Headless Chromium for the report tests: a page's DOM after its scripts ran, and the attributes
// its self-check wrote on <body>.
#pragma once

#include <regex>
#include <string>

#include "test_util.h"

namespace bulwark::report::test {

// Chromium with a throwaway HOME and profile, at most 60 s; stdout only (its logs go to a file).
inline testing::CommandResult chromium(const testing::TempDir& tmp, const std::string& flags, const std::string& page) {
  const std::string cmd = "(HOME=" + tmp.path() + " timeout 60 chromium --headless=new --no-sandbox --disable-gpu " +
                          "--no-first-run --user-data-dir=" + tmp.file("profile") + " --virtual-time-budget=5000 " +
                          flags + " file://" + page + " 2>>" + tmp.file("chromium.log") + ")";
  return testing::run_command(cmd);
}

inline std::string body_attr(const std::string& dom, const std::string& name) {
  std::smatch m;
  const std::regex body("<body[^>]*\\b" + name + "=\"([^\"]*)\"");
  return std::regex_search(dom, m, body) ? m[1].str() : "(absent)";
}

}  // namespace bulwark::report::test
