// bench/soak/metrics.cpp — the metric-label check (metrics.h): only the served models' names and
// numeric versions may appear as labels.
#include "metrics.h"

#include <set>
#include <sstream>

namespace bulwark::soak {

MetricsReport check_metrics(const std::string& text) {
  static const std::set<std::string> kModels = {"good", "flaky", "unknown"};
  MetricsReport out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    ++out.series;
    bool bad = contains(line, "ghost") || contains(line, "nope-") || contains(line, "\xEF\xBF\xBD");
    for (size_t at = line.find("model=\""); at != std::string::npos; at = line.find("model=\"", at + 1)) {
      const auto end = line.find('"', at + 7);
      bad = bad || !kModels.count(line.substr(at + 7, end - at - 7));
    }
    for (size_t at = line.find("version=\""); at != std::string::npos; at = line.find("version=\"", at + 1)) {
      const auto v = line.substr(at + 9, line.find('"', at + 9) - at - 9);
      bad = bad || v.find_first_not_of("0123456789") != std::string::npos;
    }
    if (bad && out.offending.size() < 10) out.offending.push_back(line);
  }
  return out;
}

size_t series_now(const Soak& s) {
  httplib::Client c("127.0.0.1", s.http_port);
  const auto m = c.Get("/metrics");
  return m && m->status == 200 ? check_metrics(m->body).series : 0;
}

}  // namespace bulwark::soak
