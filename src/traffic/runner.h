// traffic/runner.h — the open-loop load generator. Requests are scheduled at fixed times, 1/rate
// apart, phase after phase; `concurrency` worker threads, each with its own connection, send them.
// When the server falls behind, requests go out late (counted as `late`, with the worst lag) and
// those still unsent when their phase ends are dropped and counted (`backlog_dropped`): the
// generator never quietly slows down to the server's pace. Each answered request's true label is
// posted as feedback with the answer's id. One JSON line per wall-clock second is written (and
// flushed) once every request scheduled in that second has finished.
#pragma once

#include <torch/types.h>

#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "traffic/options.h"
#include "traffic/stats.h"
#include "traffic/workload.h"

namespace bulwark::traffic {

// One finished request, for callers that check what was sent (tests, debugging).
struct RequestRecord {
  size_t phase = 0;   // index into the options' phases
  int64_t image = 0;  // row of the workload's x / y
  bool attacked = false;
  torch::Tensor input;  // [C, H, W] exactly as sent
  int64_t label = 0;
  bool sent = false;  // false: dropped as backlog
  bool ok = false;
  int64_t predicted = -1;  // argmax of the returned logits; -1 unless ok
  std::string model_version;
  std::string error;
};
// Called once per scheduled request, from worker threads, never two at a time; must not throw.
using RequestObserver = std::function<void(const RequestRecord&)>;

struct TrafficReport {
  double start_unix_s = 0;
  int64_t seconds = 0;  // lines written
  std::vector<PhaseSummary> phases;
  uint64_t seed = 0;
  nlohmann::json to_json() const;
};

// Runs the phases in `o` with the prepared workload (whose square attackers it starts and stops),
// writing the JSON lines to o.out. Throws io_error naming --out when it cannot be written; server
// and network failures are counted, never thrown. Returns when every request has finished:
// at most the phases' length plus about 2 x --timeout-s.
TrafficReport run_traffic(Workload& w, const TrafficOptions& o, const RequestObserver& observe = {});

}  // namespace bulwark::traffic
