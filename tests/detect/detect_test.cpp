// Per-input detectors, their calibration and the offline evaluation.
#include <gtest/gtest.h>

#include <torch/torch.h>

#include <fstream>

#include "core/digest.h"
#include "core/error.h"
#include "data/dataset.h"
#include "detect/calibration.h"
#include "detect/evaluate.h"
#include "model/zoo.h"
#include "test_util.h"
#include "train/train.h"

namespace bulwark::detect {
namespace {

const data::Dataset& train_set() {
  static const data::Dataset d = data::load_dataset("fashion-mnist", data::Split::kTrain).head(6000);
  return d;
}

const data::Dataset& test_set() {
  static const data::Dataset d = data::load_dataset("fashion-mnist", data::Split::kTest).head(1000);
  return d;
}

// An undefended cnn-small trained once per binary on the first 4,000 training images; images
// 4,000..5,999 stay held out for calibration.
const model::Model& baseline() {
  static const model::Model m = [] {
    auto base = model::create_model("cnn-small", model::default_spec(), 3);
    train::CrossEntropyObjective ce;
    train::fit(base, train_set().head(4000), {}, train::TrainOptions().epochs(3).batch_size(64).progress(false), ce);
    base.set_training(false);
    return base;
  }();
  return m;
}

CalibrationOptions options(std::vector<std::string> detectors, double fpr) {
  CalibrationOptions o;
  o.detectors = std::move(detectors);
  o.fpr = fpr;
  return o;
}

const DetectorSet& calibrated() {
  static const DetectorSet s = [] {
    const auto fit = train_set().select(torch::arange(0, 4000));
    const auto ref = train_set().select(torch::arange(4000, 6000));
    return DetectorSet::calibrate(baseline(), "sha-of-baseline", options({"max-softmax", "squeeze", "mahalanobis", "pca"}, 0.05),
                                  fit.inputs(), fit.targets(), ref.inputs());
  }();
  return s;
}

Batch batch_of(const model::Model& m, const torch::Tensor& x) {
  Batch b;
  b.x = x;
  std::tie(b.logits, b.features) = m.logits_and_features(x);
  return b;
}

TEST(Detectors, ConfidenceScoresByHand) {
  const auto m = model::create_model("mlp", model::default_spec(2), 0);
  Batch b;
  b.logits = torch::tensor({{0.0f, 0.0f}, {20.0f, 0.0f}});
  const auto ms = MaxSoftmax().score(m, b);
  EXPECT_NEAR(ms[0].item<float>(), 0.5, 1e-6);
  EXPECT_NEAR(ms[1].item<float>(), 0.0, 1e-6);
  const auto en = Entropy().score(m, b);
  EXPECT_NEAR(en[0].item<float>(), 1.0, 1e-6) << "uniform over 2 classes is 1 bit of log 2";
  EXPECT_LT(en[1].item<float>(), 1e-6);
}

TEST(Detectors, MahalanobisByHand) {
  // Class 0 around (0,0), class 1 around (10,0); each is (+-1,0),(0,+-1): tied covariance diag(.5,.5).
  const auto base = torch::tensor({{-1.0f, 0.0f}, {1.0f, 0.0f}, {0.0f, -1.0f}, {0.0f, 1.0f}});
  const auto feats = torch::cat({base, base + torch::tensor({10.0f, 0.0f})});
  const auto labels = torch::tensor({0, 0, 0, 0, 1, 1, 1, 1}, torch::kLong);
  const auto d = Mahalanobis::fit(feats, labels, 2);
  EXPECT_TRUE(torch::allclose(d->means(), torch::tensor({{0.0f, 0.0f}, {10.0f, 0.0f}}), 1e-5, 1e-5));
  EXPECT_TRUE(torch::allclose(d->precision(), 2 * torch::eye(2), 1e-4, 1e-4));
  const auto m = model::create_model("mlp", model::default_spec(2), 0);
  Batch b;
  b.features = torch::tensor({{0.0f, 0.0f}, {1.0f, 1.0f}, {9.0f, 0.0f}, {5.0f, 0.0f}});
  const auto s = d->score(m, b);
  EXPECT_NEAR(s[0].item<float>(), 0.0, 1e-3);
  EXPECT_NEAR(s[1].item<float>(), 4.0, 1e-3);   // 2 * (1 + 1)
  EXPECT_NEAR(s[2].item<float>(), 2.0, 1e-3);   // closest is class 1: 2 * 1
  EXPECT_NEAR(s[3].item<float>(), 50.0, 1e-2);  // halfway: 2 * 25
  EXPECT_THROW(Mahalanobis::fit(feats.narrow(0, 0, 5), labels.narrow(0, 0, 5), 2), Error) << "class 1 has 1 point";
}

TEST(Detectors, PcaWhitenedByHand) {
  // 2-D inputs that vary along (1, 1) only, with a little noise across: the trailing component is
  // (1, -1)/sqrt 2 with a tiny variance. Moving across scores high, moving along scores ~0.
  torch::manual_seed(0);
  const auto t = torch::randn({400, 1});
  const auto across = 0.01 * torch::randn({400, 1});
  const auto x = torch::cat({t + across, t - across}, 1).view({400, 1, 1, 2});
  const auto d = PcaWhitened::fit(x, 0.5);
  EXPECT_EQ(d->components(), 1);
  const auto m = model::create_model("mlp", model::default_spec(2), 0);
  Batch b;
  b.x = torch::tensor({{0.5f, 0.5f}, {0.05f, -0.05f}}).view({2, 1, 1, 2});
  const auto s = d->score(m, b);
  EXPECT_LT(s[0].item<float>(), 1.0f) << "along the data: inside its variance";
  EXPECT_GT(s[1].item<float>(), 10.0f) << "across it: 0.05 * sqrt 2 over a 0.01 sd is ~7 sd, squared ~50";
  EXPECT_THROW(PcaWhitened::fit(x.narrow(0, 0, 1), 0.5), Error) << "fewer points than dimensions";
}

TEST(Detectors, FeatureSqueezingByHandAndStraightThroughGradient) {
  const auto m = model::create_model("mlp", model::default_spec(), 1);
  FeatureSqueezing fs({"bits:1"}, 0, 1);
  // Already binary: squeezing changes nothing, the score is 0. Mid-grey: it changes the input.
  const auto binary = (torch::rand({2, 1, 28, 28}) > 0.5).to(torch::kFloat);
  const auto grey = torch::full({2, 1, 28, 28}, 0.3f);
  EXPECT_EQ(fs.score(m, batch_of(m, binary)).abs().max().item<float>(), 0.0f);
  EXPECT_GT(fs.score(m, batch_of(m, grey)).min().item<float>(), 0.0f);
  // The score passes gradients to x through the squeezer (BPDA), for the adaptive attacker.
  auto x = grey.clone().requires_grad_(true);
  Batch b;
  b.x = x;
  b.logits = m.logits(x);
  fs.score(m, b).sum().backward();
  ASSERT_TRUE(x.grad().defined());
  EXPECT_GT(x.grad().abs().sum().item<float>(), 0.0f);
  EXPECT_THROW(FeatureSqueezing({"jpeg:50"}, 0, 1), Error);
  EXPECT_THROW(FeatureSqueezing({}, 0, 1), Error);
}

TEST(Detectors, ParseListNamesTheFlag) {
  EXPECT_EQ(parse_detector_list("squeeze,mahalanobis", "--detectors"), (std::vector<std::string>{"squeeze", "mahalanobis"}));
  try {
    parse_detector_list("squeeze,lid", "--detectors");
    FAIL() << "unknown detector accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--detectors"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("lid"), std::string::npos);
  }
  EXPECT_THROW(parse_detector_list("squeeze,squeeze", "--detectors"), Error);
  EXPECT_THROW(parse_detector_list("", "--detectors"), Error);
}

TEST(Metrics, AurocAndTprByHand) {
  EXPECT_DOUBLE_EQ(auroc(torch::tensor({0.0, 1.0}), torch::tensor({2.0, 3.0})), 1.0);
  EXPECT_DOUBLE_EQ(auroc(torch::tensor({2.0, 3.0}), torch::tensor({0.0, 1.0})), 0.0);
  EXPECT_DOUBLE_EQ(auroc(torch::tensor({1.0, 1.0}), torch::tensor({1.0, 1.0})), 0.5) << "ties count half";
  EXPECT_DOUBLE_EQ(auroc(torch::tensor({0.0, 2.0}), torch::tensor({1.0, 3.0})), 0.75);
  const auto neg = torch::arange(100).to(torch::kDouble);  // 0..99: the 95 % quantile is 94
  EXPECT_DOUBLE_EQ(tpr_at_fpr(neg, torch::tensor({94.0, 95.0, 200.0, 10.0}), 0.05), 0.5);
}

// The combined flag and each detector's threshold hit the target FPR on clean data the
// calibration never saw (the test split), within sampling tolerance.
TEST(Calibration, HitsItsFprOnHeldOutData) {
  const auto& set = calibrated();
  ASSERT_EQ(set.names(), (std::vector<std::string>{"max-softmax", "squeeze", "mahalanobis", "pca"}));
  const auto x = test_set().inputs();
  const auto s = set.score(baseline(), batch_of(baseline(), x));
  const double fpr = s.flagged.to(torch::kDouble).mean().item<double>();
  EXPECT_NEAR(fpr, 0.05, 0.03) << "combined flag rate on 1,000 clean test images";
  const auto raw = score_all(set, baseline(), x);
  for (int64_t d = 0; d < 4; ++d) {
    const double r = (raw.select(1, d) > set.thresholds()[d]).to(torch::kDouble).mean().item<double>();
    EXPECT_NEAR(r, 0.05, 0.03) << set.names()[d];
  }
  // p-values of clean points are roughly uniform: about half are below 0.5.
  const double below = (set.p_values(raw) < 0.5).to(torch::kDouble).mean().item<double>();
  EXPECT_NEAR(below, 0.5, 0.08);
}

TEST(Calibration, SaveLoadRoundTripAndRefusesAnotherModel) {
  testing::TempDir dir;
  const auto path = dir.file("m.detect");
  calibrated().save(path);
  const auto loaded = DetectorSet::load(path, baseline(), "sha-of-baseline");
  EXPECT_EQ(loaded.names(), calibrated().names());
  EXPECT_DOUBLE_EQ(loaded.combined_threshold(), calibrated().combined_threshold());
  const auto x = test_set().inputs(torch::arange(50));
  const auto a = calibrated().score(baseline(), batch_of(baseline(), x));
  const auto b = loaded.score(baseline(), batch_of(baseline(), x));
  EXPECT_TRUE(torch::allclose(a.raw, b.raw, 1e-4, 1e-4));
  EXPECT_TRUE(torch::equal(a.flagged, b.flagged));
  try {
    DetectorSet::load(path, baseline(), "sha-of-another-model");
    FAIL() << "a calibration for another model was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("another model"), std::string::npos) << e.what();
  }
  // Damaged files are refused naming what is wrong.
  std::ofstream(dir.file("bad.detect")) << "{\"format\": \"bulwark-detect/1\", \"model_sha256\": \"sha-of-baseline\"}";
  try {
    DetectorSet::load(dir.file("bad.detect"), baseline(), "sha-of-baseline");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'fpr'"), std::string::npos) << e.what();
  }
  std::ofstream(dir.file("junk.detect")) << "not json";
  EXPECT_THROW(DetectorSet::load(dir.file("junk.detect"), baseline(), "x"), Error);
  EXPECT_THROW(DetectorSet::load(dir.file("missing.detect"), baseline(), "x"), Error);
}

TEST(Calibration, SubsetGetsItsOwnCombinedThreshold) {
  const auto one = calibrated().select({"mahalanobis"});
  EXPECT_EQ(one.names(), std::vector<std::string>{"mahalanobis"});
  const auto s = one.score(baseline(), batch_of(baseline(), test_set().inputs()));
  EXPECT_NEAR(s.flagged.to(torch::kDouble).mean().item<double>(), 0.05, 0.03);
  EXPECT_THROW(calibrated().select({"entropy"}), Error);
}

TEST(Calibration, BadOptionsNameTheFlag) {
  const auto x = train_set().inputs(torch::arange(300));
  const auto y = train_set().targets(torch::arange(300));
  try {
    DetectorSet::calibrate(baseline(), "s", options({"max-softmax"}, 0.7), x, y, x);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--fpr"), std::string::npos);
  }
  EXPECT_THROW(DetectorSet::calibrate(baseline(), "s", options({"max-softmax"}, 0.01), x, y, x.narrow(0, 0, 50)), Error)
      << "too few held-out points";
}

// Against non-adaptive FGSM the detectors separate clean from adversarial inputs; the adaptive
// attacker, which sees the detectors' gradients, evades at least as often as plain PGD does.
TEST(Evaluate, DetectsFgsmAndAdaptiveEvadesAtLeastAsOftenAsPgd) {
  auto m = baseline().clone();
  EvaluateOptions o;
  o.attacks = {"fgsm", "pgd"};
  o.eps = {0.1};
  o.settings.pgd_steps = 10;
  o.adaptive_steps = 20;
  o.progress = false;
  const auto x = test_set().inputs(torch::arange(150)), y = test_set().targets(torch::arange(150));
  const auto r = evaluate_detection(m, calibrated(), x, y, o);
  auto row = [&](const std::string& det, const std::string& attack) {
    for (const auto& row : r.rows) {
      if (row.detector == det && row.attack == attack) return row;
    }
    ADD_FAILURE() << "no row " << det << " x " << attack;
    return DetectionRow{};
  };
  EXPECT_GT(row("combined", "fgsm").positives, 50);
  // A weak fixture model (cnn-small, 3 epochs on 4,000 images): its detectors are weak too, but
  // better than chance (0.5). bench/ and docs/detection.md have the figures on the real baseline.
  EXPECT_GT(row("combined", "fgsm").auroc, 0.6);
  EXPECT_GT(row("max-softmax", "pgd").auroc, 0.6);
  const auto pgd = row("combined", "pgd");
  const double pgd_unflagged = pgd.positives * (1 - pgd.tpr_at_threshold);
  const auto adaptive = row("combined", "adaptive");
  ASSERT_GE(adaptive.evasion, 0);
  const double attacked = r.clean_accuracy * r.n;
  EXPECT_GE(adaptive.evasion * attacked + 1e-9, pgd_unflagged * 0.999)
      << "the adaptive attacker should evade the combined flag at least as often as plain PGD";
  // Rows for every detector, and adaptive rows per target.
  EXPECT_EQ(r.rows.size(), 2u * 5u + 5u);
}

}  // namespace
}  // namespace bulwark::detect
