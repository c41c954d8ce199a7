// serve/detail/request_stages.h — the stages of one inference request that need no server state,
// out of InferenceCore::infer (core.cpp), which runs them in order:
//   admit (authorise, rate-limit, find the slot) → decode (body → tensor) → batch (query check,
//   the dynamic batcher) → score (the rows' detector flags) → respond (outputs, scores the caller
//   may see) → record (metrics, access log).
// score, respond and record are here, each a small function with its own tests
// (tests/serve/unit_test.cpp); admit, decode and batch use the core's state and stay in core.cpp.
// Private to serve.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "serve/access_log.h"
#include "serve/batcher.h"
#include "serve/metrics.h"
#include "serve/types.h"

namespace bulwark::serve::detail {

// score: each row's combined detector score and flag (strictly above the calibrated threshold).
// Plain loops over a double tensor: no ATen kernels on request threads (see guard.h).
struct RowScores {
  at::Tensor scores;             // [N] double, contiguous; undefined when detection is off
  std::vector<uint8_t> flagged;  // one per row; empty when detection is off
  bool on() const { return scores.defined(); }
  double at(size_t i) const;
};
RowScores score_rows(const at::Tensor& scores, double threshold);

// respond: the scores and flags go into the response only when `expose` (the guard shows them to
// this caller), named by `scorer`; the access record gets the maximum score and whether any row
// was flagged either way, and every row counts in the attack-score metrics of (model, version).
void attach_scores(const RowScores& s, bool expose, const std::string& scorer, const std::string& model,
                   const std::string& version, Metrics& metrics, InferResponse& resp, AccessRecord& rec);

// record: a served request's latency, success, queue, compute and batch-size metrics, and its
// access-log line.
void record_success(const std::string& model, const std::string& version, const BatchResult& result, double latency_s,
                    Metrics& metrics, AccessLog& log, AccessRecord& rec);

}  // namespace bulwark::serve::detail
