// serve/request_stages.cpp — score, respond and record of one inference request
// (serve/detail/request_stages.h).
#include "serve/detail/request_stages.h"

#include <torch/torch.h>

#include <algorithm>

namespace bulwark::serve::detail {

double RowScores::at(size_t i) const { return scores.data_ptr<double>()[i]; }

RowScores score_rows(const at::Tensor& scores, double threshold) {
  RowScores s;
  if (!scores.defined()) return s;
  s.scores = scores.contiguous().to(torch::kDouble);  // already so: no copy
  const double* score = s.scores.data_ptr<double>();
  for (int64_t i = 0; i < s.scores.size(0); ++i) s.flagged.push_back(score[i] > threshold);
  return s;
}

void attach_scores(const RowScores& s, bool expose, const std::string& scorer, const std::string& model,
                   const std::string& version, Metrics& metrics, InferResponse& resp, AccessRecord& rec) {
  if (!s.on()) return;
  for (size_t i = 0; i < s.flagged.size(); ++i) {
    const auto v = static_cast<float>(s.at(i));
    const bool flag = s.flagged[i];
    metrics.attack_score(model, version, v, flag);
    rec.max_score = std::max(rec.max_score, v);
    rec.flagged = rec.flagged || flag;
    if (!expose) continue;
    resp.attack_scores.push_back(v);
    resp.attack_flags.push_back(flag);
  }
  if (expose) resp.scorer = scorer;
}

void record_success(const std::string& model, const std::string& version, const BatchResult& result, double latency_s,
                    Metrics& metrics, AccessLog& log, AccessRecord& rec) {
  rec.latency_s = latency_s;
  metrics.request_success(model, version);
  metrics.request_duration(model, version, latency_s);
  metrics.queue_duration(model, version, result.queue_s);
  metrics.compute_duration(model, version, result.compute_s);
  metrics.batch_size(model, version, result.batch_rows);
  log.write(rec);
}

}  // namespace bulwark::serve::detail
