#include "traffic/options.h"

#include <cmath>

#include "core/error.h"

namespace bulwark::traffic {
namespace {

void check(bool ok, const std::string& message) {
  if (!ok) throw invalid_argument(message);
}

}  // namespace

void TrafficOptions::validate() const {
  client.validate();
  check(!phases.empty(), "--phase is required (at least one, e.g. --phase benign:20)");
  for (const auto& p : phases) {
    check(p.seconds >= 1 && p.seconds <= kMaxPhaseSeconds, "--phase: seconds must be in [1, 86400]");
    if (p.attacked()) check(p.eps_linf > 0 && p.eps_linf <= 1, "--phase: EPS must be in (0, 1]");
    if (p.transfer()) {
      check(!p.attacker_model.empty(),
            "--attacker-model is required: phase " + to_string(p.kind) + " crafts against a local model");
    }
  }
  check(std::isfinite(rate_per_s) && rate_per_s > 0 && rate_per_s <= 10000, "--rate must be in (0, 10000] requests/s");
  check(attacked_share >= 0 && attacked_share <= 1, "--attacked-share must be in [0, 1]");
  check(concurrency >= 1 && concurrency <= 256, "--concurrency must be in [1, 256]");
  check(!out.empty(), "--out is required (a file for the JSON lines, or - for stdout)");
  check(n >= 1, "--n must be at least 1");
  check(offset >= 0, "--offset must be at least 0");
  check(pgd_steps >= 1 && pgd_steps <= 1000, "--pgd-steps must be in [1, 1000]");
  check(square_queries >= 1 && square_queries <= 100000, "--square-queries must be in [1, 100000]");
  check(craft_batch >= 1 && craft_batch <= 65536, "--batch must be in [1, 65536]");
  check(!data.empty(), "--data is required");
}

}  // namespace bulwark::traffic
