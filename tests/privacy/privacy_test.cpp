// Membership-inference audit: the ROC figures on hand-checkable cases, the member rows the spec
// implies, LiRA against the loss baseline on a deliberately over-fitted model (the real CLI, real
// training), and refusals.
#include <gtest/gtest.h>

#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/files.h"
#include "data/dataset.h"
#include "model/zoo.h"
#include "privacy/privacy.h"
#include "test_util.h"

namespace bulwark {
namespace {

using testing::run_command;

testing::CommandResult bulwark(const std::string& args) { return run_command(std::string(BULWARK_BIN) + " " + args); }

TEST(PrivacyRoc, AucAndTprAtFprOnAHandCheckedCase) {
  // Members 0.9, 0.7, 0.4; non-members 0.8, 0.4, 0.1. Pairs won: 0.9 beats 3, 0.7 beats 2, 0.4 ties
  // 0.4 and beats 0.1 (1.5): 6.5 of 9.
  const std::vector<double> scores = {0.9, 0.8, 0.7, 0.4, 0.4, 0.1};
  const std::vector<bool> member = {true, false, true, true, false, false};
  EXPECT_NEAR(privacy::roc_auc(scores, member), 6.5 / 9.0, 1e-12);
  // No false positive allowed: the threshold is the highest non-member score, 0.8; only 0.9 is above.
  EXPECT_NEAR(privacy::tpr_at_fpr(scores, member, 0.001), 1.0 / 3.0, 1e-12);
  // One false positive of three allowed (FPR 1/3): threshold 0.4, strictly above: 0.9 and 0.7.
  EXPECT_NEAR(privacy::tpr_at_fpr(scores, member, 1.0 / 3.0), 2.0 / 3.0, 1e-12);
  const auto s = privacy::summarise(scores, member);
  EXPECT_EQ(s.members, 3);
  EXPECT_EQ(s.non_members, 3);
  EXPECT_NEAR(s.fpr_resolution, 1.0 / 3.0, 1e-12);
  // Reversing the scores mirrors the AUC.
  std::vector<double> negated;
  for (double v : scores) negated.push_back(-v);
  EXPECT_NEAR(privacy::roc_auc(negated, member), 1.0 - 6.5 / 9.0, 1e-12);
}

TEST(PrivacyRoc, RefusesScoresWithoutBothGroupsOrNotFinite) {
  EXPECT_THROW(privacy::roc_auc({0.1, 0.2}, {true, true}), Error);
  EXPECT_THROW(privacy::roc_auc({0.1}, {true, false}), Error);
  EXPECT_THROW(privacy::roc_auc({0.1, std::nan("")}, {true, false}), Error);
  EXPECT_THROW(privacy::tpr_at_fpr({0.1, 0.2}, {true, false}, 1.5), Error);
}

TEST(PrivacyScores, ScaledConfidenceIsTheLogOddsOfTheTrueClass) {
  const torch::Tensor logits = torch::tensor({{2.0, 0.5, -1.0}, {0.0, 0.0, 30.0}}, torch::kFloat64);
  const torch::Tensor y = torch::tensor({0, 2}, torch::kInt64);
  const torch::Tensor phi = privacy::scaled_confidence(logits, y);
  const torch::Tensor p = torch::softmax(logits, 1);
  const double p0 = p[0][0].item<double>();
  EXPECT_NEAR(phi[0].item<double>(), std::log(p0 / (1 - p0)), 1e-9);
  // Where 1 - p underflows in the naive form, the log-sum-exp form stays finite: 30 - log 2.
  EXPECT_NEAR(phi[1].item<double>(), 30.0 - std::log(2.0), 1e-9);
}

TEST(PrivacyScores, OfflineLiraMeasuresTheTargetAgainstTheOutDistribution) {
  // Shadows put example 0 around 1 and example 1 around -1; the target scores both 2. Per-example
  // variance: (2-1)/sd0 and (2+1)/sd1; example 1 lies further out.
  const torch::Tensor shadow = torch::tensor({{0.5, -1.5}, {1.5, -0.5}, {1.0, -1.0}}, torch::kFloat64);
  const torch::Tensor target = torch::tensor({2.0, 2.0}, torch::kFloat64);
  const auto z = privacy::lira_offline_scores(target, shadow, /*global_variance=*/false);
  EXPECT_NEAR(z[0], 1.0 / 0.5, 1e-9);  // sample sd of {0.5, 1.5, 1.0} is 0.5
  EXPECT_NEAR(z[1], 3.0 / 0.5, 1e-9);
  EXPECT_THROW(privacy::lira_offline_scores(target, shadow.narrow(0, 0, 1), false), Error);
}

TEST(PrivacyAudit, MemberRowsAreTheRowsTheTrainingSplitPicked) {
  // A set of distinct images; the split's training images must be exactly the member rows' images.
  data::Dataset d;
  const int64_t n = 300;
  d.images = torch::arange(n, torch::kInt64).remainder(251).to(torch::kUInt8).view({n, 1, 1, 1}).repeat({1, 1, 2, 1});
  d.images.select(2, 1).copy_((torch::arange(n, torch::kInt64) / 251).to(torch::kUInt8).view({n, 1, 1}));
  d.labels = torch::zeros({n}, torch::kInt64);
  privacy::TrainingRecord record;
  record.rows = 200;  // `--limit 200` of 300
  record.validation_fraction = 0.1;
  record.seed = 11;
  const auto split = data::split_train_validation(d.head(200), 0.1, 11);
  const torch::Tensor rows = privacy::member_rows(record, n);
  ASSERT_EQ(rows.size(0), split.train.size());
  const auto key = [](const torch::Tensor& images) {
    const torch::Tensor i = images.to(torch::kInt64).view({images.size(0), 2});
    return std::get<0>((i.select(1, 1) * 251 + i.select(1, 0)).sort());
  };
  EXPECT_TRUE(torch::equal(key(d.select(rows).images), key(split.train.images)));
  EXPECT_TRUE(rows.lt(200).all().item<bool>());
  record.rows = 400;
  EXPECT_THROW(privacy::member_rows(record, n), Error);
}

TEST(PrivacyAudit, OptionsRefuseValuesNamingTheFlag) {
  for (int64_t bad : {-1, 1, 257}) {
    try {
      privacy::AuditOptions().shadows(bad);
      FAIL() << bad;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("--shadows"), std::string::npos);
    }
  }
  EXPECT_THROW(privacy::AuditOptions().candidates(5), Error);
}

// The acceptance case: a model over-fitted on 500 images (100 % on them, ~79 % on the test split). LiRA's shadows know how confident a
// model is on an image it never saw, so it picks members out at a false-positive rate where the
// loss threshold, fooled by easy non-members, cannot.
TEST(PrivacyAudit, LiraBeatsTheLossBaselineAtLowFprOnAnOverfittedModel) {
  testing::TempDir dir;
  const auto model = dir.file("overfit.pt");
  const auto t = bulwark("--seed 3 train --model cnn-small --limit 500 --epochs 40 --batch 32 --val-fraction 0 --test-limit 500 "
                         "--quiet --out " + model);
  ASSERT_EQ(t.exit_code, 0) << t.output;
  const auto a = bulwark("--json --seed 5 privacy audit --model " + model +
                         " --shadows 3 --candidates 2000 --quiet --out " + dir.file("audit.json"));
  ASSERT_EQ(a.exit_code, 0) << a.output;
  const auto j = nlohmann::json::parse(a.output);
  EXPECT_EQ(j["loss"]["members"], 500);
  EXPECT_EQ(j["loss"]["non_members"], 2000);
  EXPECT_EQ(j["shadow_rows"], 500);
  const double loss_tpr = j["loss"]["tpr_at_0_1pct_fpr"];
  const double lira_tpr = j["lira"]["tpr_at_0_1pct_fpr"];
  std::cout << "over-fitted cnn-small (500 rows): member acc " << j["member_accuracy"] << ", non-member acc "
            << j["non_member_accuracy"] << "; loss AUC " << j["loss"]["auc"] << " TPR@0.1% " << loss_tpr
            << "; LiRA AUC " << j["lira"]["auc"] << " TPR@0.1% " << lira_tpr << "\n";
  EXPECT_GT(j["member_accuracy"].get<double>(), j["non_member_accuracy"].get<double>() + 0.1) << "not over-fitted";
  // With 500 members one member is 0.2 points: LiRA must find at least three times as many members
  // as the loss threshold, and at least five more, at 2 false positives in 2,000.
  EXPECT_GE(lira_tpr, 3 * loss_tpr);
  EXPECT_GE(lira_tpr, loss_tpr + 0.01);
  EXPECT_GT(j["lira"]["auc"].get<double>(), j["loss"]["auc"].get<double>());
  EXPECT_EQ(nlohmann::json::parse(read_file(dir.file("audit.json")))["lira"], j["lira"]);
  EXPECT_EQ(j["per_class"].size(), 10u);
}

TEST(PrivacyAudit, RefusesModelsWithoutATrainingRecordAndBadFlags) {
  testing::TempDir dir;
  const auto untrained = dir.file("zoo.pt");
  model::create_model("cnn-small", model::default_spec(), 0).save(untrained);
  const auto r = bulwark("privacy audit --model " + untrained + " --quiet");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("training record"), std::string::npos) << r.output;
  const auto s = bulwark("privacy audit --model " + untrained + " --shadows 1");
  EXPECT_EQ(s.exit_code, 2) << s.output;
  EXPECT_NE(s.output.find("--shadows"), std::string::npos) << s.output;
  const auto none = bulwark("privacy audit");
  EXPECT_EQ(none.exit_code, 2);
  EXPECT_NE(none.output.find("--model"), std::string::npos) << none.output;
}

}  // namespace
}  // namespace bulwark
