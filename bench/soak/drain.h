// bench/soak/drain.h — the end of the run: SIGTERM with requests in flight, and how the server
// drained them.
#pragma once

#include <optional>
#include <vector>

#include "soak.h"

namespace bulwark::soak {

struct DrainReport {
  std::optional<int> exit_code;
  double exit_s = 0, bound_s = 0;
  double last_slow_closed_s = -1;  // after SIGTERM: when the server ended its last slow connection
  int in_flight_at_sigterm = 0;    // probes sent before SIGTERM and answered after it
};

// Sends SIGTERM with probes in flight and waits for the exit; the probes' answers go in `tallies`
// (resized to one per probe thread).
DrainReport drain(Soak& s, std::vector<Tally>& tallies);

}  // namespace bulwark::soak
