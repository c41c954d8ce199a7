// bench/soak/metrics.h — the check on /metrics after the load: how many series, and any whose
// label a client chose (an unauthenticated or unknown model or version name).
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "soak.h"

namespace bulwark::soak {

struct MetricsReport {
  size_t series = 0;
  std::vector<std::string> offending;  // lines with a label value no client should have been able to set
};

// Reads Prometheus text; keeps the first 10 offending lines.
MetricsReport check_metrics(const std::string& text);
// The number of series /metrics has now, 0 when it does not answer.
size_t series_now(const Soak& s);

}  // namespace bulwark::soak
