#include "detect/detail/cells.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "core/error.h"

namespace bulwark::detect::detail {

std::vector<uint8_t> pooled_cells(const float* x, Shape shape, int64_t grid, double lo, double hi, const char* who) {
  if (x == nullptr || shape.channels <= 0 || shape.height <= 0 || shape.width <= 0) {
    throw invalid_argument(std::string(who) + ": a query needs at least one value");
  }
  const int64_t c = shape.channels, h = shape.height, w = shape.width;
  const int64_t gc = std::min<int64_t>(c, 3);
  const int64_t gh = h == 1 ? 1 : std::min(grid, h);
  const int64_t gw = h == 1 ? std::min(grid * grid, w) : std::min(grid, w);
  // adaptive_avg_pool's partition: cell i of n over len covers [floor(i len / n), ceil((i+1) len / n)).
  auto first = [](int64_t i, int64_t n, int64_t len) { return i * len / n; };
  auto last = [](int64_t i, int64_t n, int64_t len) { return ((i + 1) * len + n - 1) / n; };
  const double scale = 255.0 / (hi - lo);
  std::vector<uint8_t> out(static_cast<size_t>(gc * gh * gw));
  size_t k = 0;
  for (int64_t g = 0; g < gc; ++g) {
    for (int64_t r = 0; r < gh; ++r) {
      for (int64_t q = 0; q < gw; ++q) {
        double sum = 0;
        int64_t count = 0;
        for (int64_t ch = first(g, gc, c); ch < last(g, gc, c); ++ch) {
          for (int64_t y = first(r, gh, h); y < last(r, gh, h); ++y) {
            const float* row = x + (ch * h + y) * w;
            for (int64_t i = first(q, gw, w); i < last(q, gw, w); ++i) {
              const double s = (row[i] - lo) * scale;
              sum += s >= 0 ? std::min(s, 255.0) : 0.0;  // the comparison also maps NaN to 0
            }
            count += last(q, gw, w) - first(q, gw, w);
          }
        }
        out[k++] = static_cast<uint8_t>(std::lround(sum / static_cast<double>(count)));
      }
    }
  }
  return out;
}

}  // namespace bulwark::detect::detail
