#include "privacy/roc.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/error.h"

namespace bulwark::privacy {
namespace {

void check_sizes(const std::vector<double>& scores, const std::vector<bool>& is_member) {
  if (scores.size() != is_member.size()) {
    throw invalid_argument("membership scores: " + std::to_string(scores.size()) + " scores for " +
                           std::to_string(is_member.size()) + " labels");
  }
  const auto members = std::count(is_member.begin(), is_member.end(), true);
  if (members == 0 || members == static_cast<std::ptrdiff_t>(is_member.size())) {
    throw invalid_argument("membership scores: need both members and non-members (" + std::to_string(members) +
                           " members of " + std::to_string(is_member.size()) + ")");
  }
  for (double s : scores) {
    if (!std::isfinite(s)) throw invalid_argument("membership scores: a score is not finite");
  }
}

}  // namespace

double roc_auc(const std::vector<double>& scores, const std::vector<bool>& is_member) {
  check_sizes(scores, is_member);
  std::vector<size_t> order(scores.size());
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return scores[a] < scores[b]; });
  // Rank sum of the members, tied scores sharing their average rank.
  double member_rank_sum = 0;
  int64_t members = 0;
  for (size_t i = 0; i < order.size();) {
    size_t j = i;
    while (j < order.size() && scores[order[j]] == scores[order[i]]) ++j;
    const double rank = 0.5 * static_cast<double>(i + 1 + j);  // mean of ranks i+1 .. j
    for (size_t k = i; k < j; ++k) {
      if (is_member[order[k]]) {
        member_rank_sum += rank;
        ++members;
      }
    }
    i = j;
  }
  const auto m = static_cast<double>(members);
  const auto n = static_cast<double>(scores.size()) - m;
  return (member_rank_sum - m * (m + 1) / 2) / (m * n);
}

double tpr_at_fpr(const std::vector<double>& scores, const std::vector<bool>& is_member, double fpr) {
  check_sizes(scores, is_member);
  if (!(fpr >= 0 && fpr < 1)) throw invalid_argument("fpr must be in [0, 1), got " + std::to_string(fpr));
  std::vector<double> outside, inside;
  for (size_t i = 0; i < scores.size(); ++i) (is_member[i] ? inside : outside).push_back(scores[i]);
  std::sort(outside.begin(), outside.end(), std::greater<>());
  const auto allowed = static_cast<size_t>(std::floor(fpr * static_cast<double>(outside.size()) + 1e-9));
  // Flag scores > threshold; the threshold is the (allowed+1)-th highest non-member score, so at
  // most `allowed` non-members lie strictly above it.
  const double threshold = outside[std::min(allowed, outside.size() - 1)];
  const auto hits = std::count_if(inside.begin(), inside.end(), [&](double s) { return s > threshold; });
  return static_cast<double>(hits) / static_cast<double>(inside.size());
}

RocSummary summarise(const std::vector<double>& scores, const std::vector<bool>& is_member) {
  RocSummary r;
  r.auc = roc_auc(scores, is_member);
  r.members = std::count(is_member.begin(), is_member.end(), true);
  r.non_members = static_cast<int64_t>(is_member.size()) - r.members;
  r.tpr_at_0_1pct = tpr_at_fpr(scores, is_member, 0.001);
  r.tpr_at_1pct = tpr_at_fpr(scores, is_member, 0.01);
  r.fpr_resolution = 1.0 / static_cast<double>(r.non_members);
  return r;
}

nlohmann::json RocSummary::to_json() const {
  return {{"members", members},
          {"non_members", non_members},
          {"auc", auc},
          {"tpr_at_0_1pct_fpr", tpr_at_0_1pct},
          {"tpr_at_1pct_fpr", tpr_at_1pct},
          {"fpr_resolution", fpr_resolution}};
}

}  // namespace bulwark::privacy
