// traffic/workload.h — what a traffic run sends, prepared before its clock starts: the labelled
// test images in a seeded order, adversarials crafted for each transfer phase (fgsm/pgd against a
// LOCAL copy of a model, with the attack suite), and a warmed-up Square attacker per square phase.
#pragma once

#include <torch/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "traffic/options.h"
#include "traffic/square_attacker.h"

namespace bulwark::model {
class Model;
}

namespace bulwark::traffic {

struct PhasePlan {
  Phase phase;
  torch::Tensor adversarial;               // transfer phases: [n, C, H, W], row i crafted from image i
  double craft_seconds = 0;                // crafting (transfer) or warm-up (square) time
  double local_fooled = 0;                 // transfer: share of adversarials the attacker model itself misclassifies
  std::unique_ptr<SquareAttacker> square;  // square phases
};

struct Workload {
  std::string dataset;
  torch::Tensor x;               // [n, C, H, W] float in [0, 1], contiguous
  torch::Tensor y;               // [n] int64
  std::vector<int64_t> order;    // seeded permutation of [0, n): request k sends image order[k % n]
  std::vector<PhasePlan> plans;  // one per phase, in order
};

// Loads the test images [offset, offset + n), checks them against every attacker model's input
// shape, crafts each transfer phase's adversarials (identical phases share them) and warms up
// each Square attacker against the endpoint. Progress and timings go to stderr.
Workload prepare_workload(const TrafficOptions& o);

// One transfer phase's adversarials for (x, y) against `m`, batched through the attack suite:
// FGSM, or PGD with --pgd-steps of eps/4 from a random start and no early stop (every point
// takes every step, so it sits deep past the local boundary and transfers better).
torch::Tensor craft_transfer(const Phase& p, model::Model& m, const torch::Tensor& x, const torch::Tensor& y,
                             const TrafficOptions& o);

}  // namespace bulwark::traffic
