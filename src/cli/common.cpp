#include "cli/common.h"

#include <torch/torch.h>

#include <cstdio>
#include <iostream>

#include "core/system.h"
#include "core/version.h"

namespace bulwark::cli {

void apply_threads(const GlobalOptions& g) {
  torch::set_num_threads(g.threads > 0 ? g.threads : hardware_threads());
}

void print_result(const GlobalOptions& g, const nlohmann::json& j,
                  const std::vector<std::pair<std::string, std::string>>& rows) {
  if (g.json) {
    std::cout << j.dump(2) << std::endl;
    return;
  }
  size_t width = 0;
  for (const auto& r : rows) width = std::max(width, r.first.size());
  for (const auto& r : rows) std::cout << r.first << std::string(width - r.first.size() + 2, ' ') << r.second << '\n';
  std::cout << std::flush;
}

void print_table(const std::vector<std::string>& header, const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> width(header.size(), 0);
  for (size_t c = 0; c < header.size(); ++c) width[c] = header[c].size();
  for (const auto& r : rows) {
    for (size_t c = 0; c < r.size() && c < width.size(); ++c) width[c] = std::max(width[c], r[c].size());
  }
  const auto line = [&width](const std::vector<std::string>& cells) {
    for (size_t c = 0; c < cells.size() && c < width.size(); ++c) {
      std::cout << cells[c] << (c + 1 < cells.size() ? std::string(width[c] - cells[c].size() + 2, ' ') : "");
    }
    std::cout << '\n';
  };
  line(header);
  for (const auto& r : rows) line(r);
  std::cout << std::flush;
}

std::string percent(double fraction, int decimals) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.*f%%", decimals, 100.0 * fraction);
  return buf;
}

std::string with_commas(int64_t n) {
  std::string s = std::to_string(n < 0 ? -n : n);
  for (int i = static_cast<int>(s.size()) - 3; i > 0; i -= 3) s.insert(static_cast<size_t>(i), ",");
  return (n < 0 ? "-" : "") + s;
}

std::string version_text() {
  return std::string("bulwark ") + BULWARK_VERSION + "\nlibtorch " + TORCH_VERSION + " (CPU, " +
         std::to_string(at::get_num_threads()) + " threads)\nblas " + loaded_blas() + "\n";
}

}  // namespace bulwark::cli
