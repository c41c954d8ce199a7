// traffic/options.h — everything a traffic run is told, as one plain struct with in-class
// defaults; validate() checks it all before any data, model or network is touched.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "traffic/client.h"
#include "traffic/phases.h"

namespace bulwark::traffic {

struct TrafficOptions {
  ClientOptions client;                // --url, --model, tokens, --timeout-s
  std::string data = "fashion-mnist";  // test split of this dataset (data::load_dataset)
  std::vector<int64_t> input_shape;    // the served model's C,H,W: image folders are converted to it
  std::vector<Phase> phases;           // in order; attacker models resolved (resolve_attacker_models)
  double rate_per_s = 10;              // scheduled requests per second (open loop)
  double attacked_share = 0.5;         // in attack phases, this share of requests is attacked
  int concurrency = 4;                 // worker threads, each with its own connection
  std::string out;                     // JSON lines, one per second; "-" = stdout
  uint64_t seed = 0;                   // image order, Square and PGD random starts
  int64_t n = 2000;                    // test images used, from `offset`
  int64_t offset = 0;
  int64_t pgd_steps = 10;
  int64_t square_queries = 100;  // Square's query budget per image
  int64_t craft_batch = 256;     // images crafted together (memory bound)
  bool feedback = true;          // post each answer's true label (role feedback)
  bool progress = true;          // progress bars on stderr
  // Append to `out` and continue its clock: t counts from the file's first line, so two runs (say,
  // one against the old model and one against the new) make one log for `bulwark report`.
  bool append = false;
  // Set from any thread (a signal handler) to end the run early: no new requests; the seconds
  // already scheduled finish and are written, so the log stays whole.
  std::shared_ptr<std::atomic<bool>> stop;

  // Throws invalid_argument naming the flag: --rate in (0, 10000], --attacked-share in [0, 1],
  // --concurrency in [1, 256], --n >= 1, --offset >= 0, --pgd-steps in [1, 1000],
  // --square-queries in [1, 100000], --out set, --phase, --attacker-model, and the client's.
  void validate() const;
};

}  // namespace bulwark::traffic
