// bench/profile.h — LibTorch's legacy profiler as the benches use it: the RecordFunction ranges a
// body opens, with each one's self time (its time less its children's), and a per-op table.
#pragma once

#include <torch/csrc/autograd/profiler_legacy.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace bulwark::bench {

using Shapes = std::vector<std::vector<int64_t>>;
namespace prof = torch::autograd::profiler;

// One RecordFunction range of the legacy profiler, in the order ranges opened on their thread.
struct Range {
  std::string name;
  Shapes shapes;
  int parent = -1;  // index of the enclosing range on the same thread
  double self_us = 0;
};

template <class F>
inline std::vector<Range> profile_ranges(bool shapes, F&& body) {
  prof::enableProfilerLegacy(torch::profiler::impl::ProfilerConfig(torch::profiler::impl::ProfilerState::CPU, shapes));
  body();
  const auto lists = prof::disableProfilerLegacy();
  std::vector<Range> out;
  for (const auto& list : lists) {
    struct Open {
      int index;
      double start_us, child_us;
      uint64_t handle;
    };
    std::vector<Open> open;
    for (const auto& e : list) {
      if (e.kind() == prof::EventKind::PushRange) {
        out.push_back({e.name(), e.shapes(), open.empty() ? -1 : open.back().index, 0});
        open.push_back({static_cast<int>(out.size()) - 1, e.cpuUs(), 0, e.handle()});
      } else if (e.kind() == prof::EventKind::PopRange) {
        // Pops match pushes by handle; a range left open inside closes with its parent.
        // (A pop without a handle closes the innermost range.)
        const bool by_handle = e.handle() != 0;
        auto it = std::find_if(open.rbegin(), open.rend(), [&](const Open& o) { return o.handle == e.handle(); });
        if (by_handle && it == open.rend()) continue;
        while (!open.empty()) {
          const Open o = open.back();
          open.pop_back();
          const double total = e.cpuUs() - o.start_us;
          out[o.index].self_us = total - o.child_us;
          if (!open.empty()) open.back().child_us += total;
          if (!by_handle || o.handle == e.handle()) break;
        }
      }
    }
  }
  return out;
}

// The ops of `ranges` by total self time, largest first (at most `rows`), under `title`.
inline void print_self_time(const std::vector<Range>& ranges, const std::string& title, size_t rows = 15) {
  std::map<std::string, std::pair<double, int64_t>> by_name;  // self us, calls
  double total = 0;
  for (const auto& r : ranges) {
    by_name[r.name].first += r.self_us;
    by_name[r.name].second += 1;
    total += r.self_us;
  }
  std::vector<std::pair<std::string, std::pair<double, int64_t>>> sorted(by_name.begin(), by_name.end());
  std::sort(sorted.begin(), sorted.end(), [](const auto& a, const auto& b) { return a.second.first > b.second.first; });
  std::printf("\n%s (total %.1f ms)\n", title.c_str(), total / 1000);
  std::printf("  %-58s %10s %6s %7s\n", "op", "self ms", "%", "calls");
  for (size_t i = 0; i < sorted.size() && i < rows; ++i) {
    std::printf("  %-58.58s %10.2f %5.1f%% %7lld\n", sorted[i].first.c_str(), sorted[i].second.first / 1000,
                100 * sorted[i].second.first / std::max(total, 1e-9), static_cast<long long>(sorted[i].second.second));
  }
}

}  // namespace bulwark::bench
