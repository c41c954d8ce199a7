// Backdoor scan (src/poison) against BadNets on a Fashion-MNIST subset: at 1, 5 and 10 % poison,
// one-to-one (Pullover -> T-shirt/top) and all-to-one (every other class -> T-shirt/top), a real
// cnn-small trained on the poisoned set must carry the backdoor, the better of the scan's two methods
// must find it (recall >= 0.9 at precision >= 0.5), and retraining without the suspects must remove it
// (attack success <= 10 %) without losing clean accuracy. A clean set: nothing flagged. The CLI end to
// end on one poisoned set, and its refusals. Each TEST runs in its own process (ctest), so each trains
// its own models; sizes are picked to keep the file near a minute on two cores.
#include <gtest/gtest.h>

#include <torch/torch.h>

#include <fstream>
#include <set>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/files.h"
#include "data/dataset.h"
#include "data/npz.h"
#include "model/zoo.h"
#include "poison/poison.h"
#include "test_util.h"
#include "train/train.h"

namespace bulwark {
namespace {

using testing::run_command;

constexpr int64_t kRows = 8000;  // clean training rows (the first of Fashion-MNIST's train split)
constexpr int64_t kTarget = 0;   // T-shirt/top
constexpr int64_t kSource = 2;   // Pullover (one-to-one)

testing::CommandResult bulwark(const std::string& args) { return run_command(std::string(BULWARK_BIN) + " " + args); }

const data::Dataset& clean_set() {
  static const data::Dataset d = data::load_dataset("fashion-mnist", data::Split::kTrain).head(kRows);
  return d;
}
const data::Dataset& test_set() {
  static const data::Dataset d = data::load_dataset("fashion-mnist", data::Split::kTest).head(5000);
  return d;
}

// Five epochs: at three, the 1 % all-to-one backdoor (80 images from nine classes) did not take
// (attack success 9 %), and a scan of a model without a backdoor proves nothing.
train::TrainOptions recipe() {
  return train::TrainOptions().epochs(5).batch_size(128).lr(1e-3).validation_fraction(0.05).seed(0).progress(false);
}

model::Model train_on(const data::Dataset& d) {
  model::ModelSpec spec;
  spec.input_shape = {1, 28, 28};
  spec.class_names = d.class_names;
  spec.dataset = d.name;
  model::Model m = model::create_model("cnn-small", spec, 0);
  const auto split = data::split_train_validation(d, recipe().validation_fraction(), 0);
  train::CrossEntropyObjective objective;
  train::fit(m, split.train, split.validation, recipe(), objective);
  // What `bulwark train` records, so retraining follows the same recipe.
  m.mutable_spec().training = {{"options", recipe().to_json()},
                               {"train_images", split.train.size()},
                               {"validation_images", split.validation.size()}};
  return m;
}

struct PrecisionRecall {
  double precision = 0, recall = 0;
};

PrecisionRecall score(const std::vector<int64_t>& rows, const torch::Tensor& is_poison) {
  const torch::Tensor p = is_poison.contiguous();
  int64_t hit = 0;
  for (int64_t r : rows) hit += p.data_ptr<bool>()[r] ? 1 : 0;
  const int64_t poison = p.sum().item<int64_t>();
  return {rows.empty() ? 0.0 : static_cast<double>(hit) / static_cast<double>(rows.size()),
          static_cast<double>(hit) / static_cast<double>(poison)};
}

poison::BadNetsOptions attack(poison::BadNetsMode mode, double rate) {
  auto o = poison::BadNetsOptions(kTarget, rate).mode(mode).seed(17);
  if (mode == poison::BadNetsMode::kOneToOne) o.source(kSource);
  return o;
}

// The whole path at one rate; returns the scan for callers that check more.
void poison_scan_retrain(poison::BadNetsMode mode, double rate) {
  const auto bo = attack(mode, rate);
  const poison::PoisonedSet set = poison::badnets(clean_set(), bo);
  ASSERT_EQ(set.poisoned, std::llround(rate * kRows));
  const model::Model m = train_on(set.data);
  const double asr_before = poison::attack_success_rate(m, test_set(), bo);
  const double accuracy_before = train::evaluate(m, test_set()).accuracy();
  // The backdoor took: without it there is nothing to find or remove.
  ASSERT_GE(asr_before, 0.5) << "the backdoor did not take; the test would be vacuous";

  const poison::ScanResult r = poison::scan(m, set.data, poison::ScanOptions().progress(false).seed(0));
  const PrecisionRecall spectral = score(r.rows_of("spectral"), set.is_poison);
  const PrecisionRecall clustering = score(r.rows_of("clustering"), set.is_poison);
  const PrecisionRecall verdict = score(r.suspected_rows, set.is_poison);
  const PrecisionRecall& best = spectral.recall >= clustering.recall ? spectral : clustering;
  std::printf("%s %.0f%%: ASR %.3f acc %.3f | spectral P %.3f R %.3f | clustering P %.3f R %.3f | verdict P %.3f R %.3f\n",
              mode == poison::BadNetsMode::kOneToOne ? "one-to-one" : "all-to-one", rate * 100, asr_before,
              accuracy_before, spectral.precision, spectral.recall, clustering.precision, clustering.recall,
              verdict.precision, verdict.recall);
  EXPECT_GE(best.recall, 0.9);
  EXPECT_GE(best.precision, 0.5);
  EXPECT_TRUE(r.failed);
  // Only the target class is flagged: the poison is labelled there, whatever it looks like.
  for (const auto& c : r.classes) EXPECT_EQ(c.flagged, c.label == kTarget) << c.name;

  // Removing the verdict's rows (what a user removes) and retraining by the same recipe.
  const poison::Retrained re = poison::retrain_without(m, set.data, r.suspected_rows, 0, false);
  EXPECT_EQ(re.removed, static_cast<int64_t>(r.suspected_rows.size()));
  const double asr_after = poison::attack_success_rate(re.model, test_set(), bo);
  const double accuracy_after = train::evaluate(re.model, test_set()).accuracy();
  std::printf("  retrained without %lld rows: ASR %.3f acc %.3f\n", static_cast<long long>(re.removed), asr_after,
              accuracy_after);
  EXPECT_LE(asr_after, 0.10);
  EXPECT_GE(accuracy_after, accuracy_before - 0.03);
}

TEST(PoisonScan, OneToOneOnePercent) { poison_scan_retrain(poison::BadNetsMode::kOneToOne, 0.01); }
TEST(PoisonScan, OneToOneFivePercent) { poison_scan_retrain(poison::BadNetsMode::kOneToOne, 0.05); }
TEST(PoisonScan, OneToOneTenPercent) { poison_scan_retrain(poison::BadNetsMode::kOneToOne, 0.10); }
TEST(PoisonScan, AllToOneOnePercent) { poison_scan_retrain(poison::BadNetsMode::kAllToOne, 0.01); }
TEST(PoisonScan, AllToOneFivePercent) { poison_scan_retrain(poison::BadNetsMode::kAllToOne, 0.05); }

TEST(PoisonScan, AllToOneTenPercentHalfTheTargetClass) {
  // At 10 % all-to-one the poison is as large as the target class: "the smaller cluster" is a coin flip.
  poison_scan_retrain(poison::BadNetsMode::kAllToOne, 0.10);
}

TEST(PoisonScan, CleanSetFlagsNothing) {
  const model::Model m = train_on(clean_set());
  const poison::ScanResult r = poison::scan(m, clean_set(), poison::ScanOptions().progress(false).seed(0));
  EXPECT_FALSE(r.failed);
  EXPECT_EQ(r.flagged_classes, 0);
  EXPECT_TRUE(r.suspected_rows.empty());
  ASSERT_EQ(r.classes.size(), 10u);
  for (const auto& c : r.classes) {
    // Not vacuous: every class was split and measured, and each split fell short of its threshold.
    ASSERT_TRUE(c.spectral && c.clustering) << c.name;
    EXPECT_GT(c.spectral->statistic, 2.0) << c.name;  // any cut of one bump gives ~2.65
    EXPECT_LT(c.spectral->statistic, r.options.spectral_threshold()) << c.name;
    EXPECT_GT(c.clustering->statistic, 0.0) << c.name;
    EXPECT_LT(c.clustering->statistic, r.options.silhouette_threshold()) << c.name;
  }
  const nlohmann::json j = r.to_json(m.spec().class_names);
  EXPECT_EQ(j.at("suspected"), 0);
  EXPECT_EQ(j.at("flagged_classes"), 0);
  EXPECT_EQ(j.at("failed"), 0);
}

TEST(PoisonBadNets, PoisonIsAddedInterleavedAndStamped) {
  const data::Dataset& clean = clean_set();
  const auto bo = attack(poison::BadNetsMode::kAllToOne, 0.05);
  const poison::PoisonedSet set = poison::badnets(clean, bo);
  EXPECT_EQ(set.data.size(), kRows + 400);
  EXPECT_EQ(set.is_poison.sum().item<int64_t>(), 400);
  const torch::Tensor rows = torch::nonzero(set.is_poison).squeeze(1);
  // Interleaved: not all at the end.
  EXPECT_LT(rows.min().item<int64_t>(), kRows);
  // Each poisoned row is its origin stamped and relabelled; no origin is the target class.
  const torch::Tensor origin = set.origin.index_select(0, rows);
  EXPECT_TRUE(set.data.labels.index_select(0, rows).eq(kTarget).all().item<bool>());
  EXPECT_TRUE(clean.labels.index_select(0, origin).ne(kTarget).all().item<bool>());
  EXPECT_TRUE(set.data.images.index_select(0, rows).equal(
      poison::stamp_trigger(clean.images.index_select(0, origin), bo.patch_size())));
  // The stamp changes only its square.
  const torch::Tensor diff = set.data.images.index_select(0, rows).ne(clean.images.index_select(0, origin));
  using torch::indexing::Slice;
  EXPECT_FALSE(diff.index({Slice(), Slice(), Slice(0, 23)}).any().item<bool>());
  EXPECT_FALSE(diff.index({Slice(), Slice(), Slice(), Slice(0, 23)}).any().item<bool>());
  // Deterministic given the seed.
  EXPECT_TRUE(poison::badnets(clean, bo).data.labels.equal(set.data.labels));
  // Refusals name the limit.
  const auto too_many = poison::BadNetsOptions(0, 0.5).mode(poison::BadNetsMode::kOneToOne).source(2);
  EXPECT_THROW((void)poison::badnets(clean, too_many), Error);
  EXPECT_THROW((void)poison::BadNetsOptions(0, 0.0), Error);
  EXPECT_THROW((void)poison::BadNetsOptions(0, 0.1).source(0), Error);
}

TEST(PoisonCluster, TwoMeansAndSilhouetteOnHandCheckedCases) {
  // 1-D: {0, 1, 10, 11}: the cut is between 1 and 10; means 0.5 and 10.5, pooled sd 0.5: separation 20.
  const auto s = poison::two_means_1d(torch::tensor({10.0, 0.0, 11.0, 1.0}, torch::kFloat64));
  EXPECT_NEAR(s.threshold, 5.5, 1e-12);
  EXPECT_EQ(s.high_count, 2);
  EXPECT_NEAR(s.separation, 20.0, 1e-9);
  EXPECT_TRUE(s.high.equal(torch::tensor({true, false, true, false})));
  // Two tight far groups: k-means finds them from any start; silhouette near 1.
  const torch::Tensor x = torch::cat({torch::randn({50, 3}, torch::kFloat64) * 0.1,
                                      torch::randn({30, 3}, torch::kFloat64) * 0.1 + 10});
  const auto km = poison::kmeans2(x, 3, 1);
  EXPECT_EQ(km.assignment.narrow(0, 0, 50).min().item<int64_t>(), km.assignment.narrow(0, 0, 50).max().item<int64_t>());
  EXPECT_NE(km.assignment[0].item<int64_t>(), km.assignment[50].item<int64_t>());
  EXPECT_GT(poison::silhouette(x, km.assignment, 1000, 0), 0.95);
  // One Gaussian: the silhouette of its best split stays low.
  const torch::Tensor g = torch::randn({400, 2}, torch::kFloat64);
  EXPECT_LT(poison::silhouette(g, poison::kmeans2(g, 3, 1).assignment, 1000, 0), 0.5);
}

TEST(PoisonCli, ScansAPoisonedSetEndToEnd) {
  // A 10 % one-to-one set written as train.npz + test.npz, a model trained here and saved, and the
  // command's JSON, CSV and verdict against the library's.
  testing::TempDir dir;
  const auto bo = attack(poison::BadNetsMode::kOneToOne, 0.10);
  const poison::PoisonedSet set = poison::badnets(clean_set(), bo);
  data::write_npz(dir.file("train.npz"), set.data.images, set.data.labels);
  data::write_npz(dir.file("test.npz"), test_set().images, test_set().labels);
  model::Model m = train_on(set.data);
  m.mutable_spec().dataset = dir.path();
  m.save(dir.file("m.pt"));
  const auto out = bulwark("poison scan --model " + dir.file("m.pt") + " --data " + dir.path() + " --out " +
                           dir.file("r.json") + " --suspects " + dir.file("s.csv") +
                           " --trigger-target 0 --trigger-source 2 --quiet");
  ASSERT_EQ(out.exit_code, 0) << out.output;
  EXPECT_NE(out.output.find("FAILED"), std::string::npos) << out.output;
  const nlohmann::json j = nlohmann::json::parse(read_file(dir.file("r.json")));
  ASSERT_EQ(j.at("failed"), 1);
  EXPECT_EQ(j.at("flagged_classes"), 1);
  const poison::ScanResult lib = poison::scan(m, set.data, poison::ScanOptions().progress(false));
  EXPECT_EQ(j.at("suspected").get<size_t>(), lib.suspected_rows.size());
  EXPECT_GE(j.at("before").at("attack_success_rate").get<double>(), 0.5);
  std::ifstream csv(dir.file("s.csv"));
  std::string header;
  std::getline(csv, header);
  EXPECT_EQ(header, "row,label,class,score,method");
  std::set<int64_t> rows;
  for (std::string line; std::getline(csv, line);) rows.insert(std::stoll(line.substr(0, line.find(','))));
  EXPECT_EQ(rows.size(), lib.suspected_rows.size());
  EXPECT_GE(score({rows.begin(), rows.end()}, set.is_poison).recall, 0.9);
}

TEST(PoisonCli, RefusesBadInputsNamingTheFlag) {
  testing::TempDir dir;
  // A module without features(): the scan has nothing to read.
  torch::jit::Module bare("Bare");
  bare.define("def forward(self, x):\n    return x.flatten(1).narrow(1, 0, 10)\n");
  model::ModelSpec spec;
  spec.input_shape = {1, 28, 28};
  spec.class_names = clean_set().class_names;
  spec.arch = "torchscript";
  model::Model(bare, spec).save(dir.file("bare.pt"));
  auto out = bulwark("poison scan --model " + dir.file("bare.pt") + " --quiet");
  EXPECT_EQ(out.exit_code, 2) << out.output;
  EXPECT_NE(out.output.find("--model"), std::string::npos) << out.output;
  EXPECT_NE(out.output.find("features"), std::string::npos) << out.output;

  // Data of another shape than the model's.
  model::Model small = model::create_model("mlp", spec, 0);
  small.save(dir.file("mlp.pt"));
  std::filesystem::create_directory(dir.file("rgb"));
  const torch::Tensor rgb = torch::zeros({50, 3, 32, 32}, torch::kUInt8);
  data::write_npz(dir.file("rgb/train.npz"), rgb, torch::zeros({50}, torch::kInt64));
  data::write_npz(dir.file("rgb/test.npz"), rgb, torch::zeros({50}, torch::kInt64));
  out = bulwark("poison scan --model " + dir.file("mlp.pt") + " --data " + dir.file("rgb") + " --quiet");
  EXPECT_EQ(out.exit_code, 2) << out.output;
  EXPECT_NE(out.output.find("3x32x32"), std::string::npos) << out.output;

  // Bad flag values: exit 2, the flag named.
  for (const std::string bad : {"--method foo", "--spectral-threshold -1", "--silhouette-threshold 1.5",
                                 "--neighbours 0", "--reference-rows 5", "--trigger-size 0 --trigger-target 0"}) {
    out = bulwark("poison scan --model " + dir.file("mlp.pt") + " --quiet " + bad);
    EXPECT_EQ(out.exit_code, 2) << bad << ": " << out.output;
    const std::string flag = bad.substr(0, bad.find(' '));
    EXPECT_NE(out.output.find(flag), std::string::npos) << bad << ": " << out.output;
  }
  // --retrain on a model without a recipe: refused before any work.
  torch::jit::Module with_features("F");
  with_features.define("def features(self, x):\n    return x.flatten(1)\n\ndef forward(self, x):\n    return x.flatten(1).narrow(1, 0, 10)\n");
  model::Model(with_features, spec).save(dir.file("imported.pt"));
  out = bulwark("poison scan --model " + dir.file("imported.pt") + " --retrain --quiet");
  EXPECT_EQ(out.exit_code, 2) << out.output;
  EXPECT_NE(out.output.find("--retrain"), std::string::npos) << out.output;
}

}  // namespace
}  // namespace bulwark
