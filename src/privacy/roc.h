// privacy/roc.h — how well a membership score separates members from non-members: AUC and the
// true-positive rate at a low false-positive rate, the convention of Carlini et al. (S&P 2022), who
// showed that an attack's AUC can look like chance while it identifies some members with certainty.
#pragma once

#include <cstdint>
#include <vector>

#include <nlohmann/json.hpp>

namespace bulwark::privacy {

struct RocSummary {
  int64_t members = 0;
  int64_t non_members = 0;
  double auc = 0;              // P(score of a random member > a random non-member); ties count half
  double tpr_at_0_1pct = 0;    // TPR at FPR <= 0.1 %
  double tpr_at_1pct = 0;      // TPR at FPR <= 1 %
  // The smallest FPR a TPR can be read at with this many non-members (1 / non_members): a TPR "at
  // 0.1 % FPR" over fewer than 1,000 non-members is a TPR at zero false positives.
  double fpr_resolution = 0;
  nlohmann::json to_json() const;
};

// Higher score = more likely a member. Throws invalid_argument when the sizes differ or either
// group is empty.
RocSummary summarise(const std::vector<double>& scores, const std::vector<bool>& is_member);

// The fraction of members scored strictly above a threshold that at most floor(fpr * non_members)
// non-members exceed: no false positive is traded for a tie.
double tpr_at_fpr(const std::vector<double>& scores, const std::vector<bool>& is_member, double fpr);

// Mann-Whitney AUC, ties counted one half.
double roc_auc(const std::vector<double>& scores, const std::vector<bool>& is_member);

}  // namespace bulwark::privacy
