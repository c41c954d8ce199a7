// bench/harden — one epoch of standard training, Fast-AT, PGD-7-AT and TRADES (7 steps) on the
// zoo `cnn`, measured in the same run, reported as ratios to the standard epoch
// (goals: Fast-AT <= 2.2x, PGD-7 <= 8.2x).
//
// usage: harden [images=60000 (full Fashion-MNIST training set)] [batch=128] [pairs=0]
// With pairs > 0, only standard and Fast-AT run, alternating, `pairs` times; the Fast-AT figure is
// the median of the per-pair ratios, so drift on a shared machine hits both sides of each pair.
//
// usage: harden profile [images=2560] [batch=128] [precision=fp32|bf16] [layout=channels-last|nchw]
// A per-op profile (self time) of PGD-7-AT's training steps on the first `images` images. The
// legacy profiler's own cost moves time between ops (the profiled run takes ~3x the plain one):
// read it for which ops matter, and time the levers with `precision`.
//
// usage: harden precision [images=60000] [batch=128] [epochs=1] [first=fp32|bf16]
// PGD-7-AT on the module's untouched forward graph in NCHW (the reference: before issue 14), then
// on the rewritten graph in NCHW (--nchw: weights and inner-attack passes), then with channels-last
// weights and passes (the default) with fp32 and with bf16 inner-attack gradient passes
// (--attack-precision), from the same initial weights and seed, one after the other (`bf16` first:
// the reverse order); each side's seconds per epoch, then the clean accuracy and PGD-20 robust
// accuracy (fp32, eps 0.1, 1,000 test images) each reaches after the same epochs. The untouched
// side is Bulwark before issue 14 and runs in a child process with glibc's default malloc
// (bench/child.h); this program and the other sides use the CLI's malloc setting (core/system.h).
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "attack/attack.h"
#include "child.h"
#include "core/system.h"
#include "data/dataset.h"
#include "defense/objectives.h"
#include "model/zoo.h"
#include "profile.h"
#include "train/trainer.h"

namespace {

double epoch_seconds(const bulwark::data::Dataset& d, int64_t batch, bulwark::train::Objective& objective) {
  auto m = bulwark::model::create_model("cnn", bulwark::model::default_spec(), 0);
  const auto t0 = std::chrono::steady_clock::now();
  bulwark::train::fit(m, d, {}, bulwark::train::TrainOptions().epochs(1).batch_size(batch).progress(false), objective);
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

int profile_mode(int64_t images, int64_t batch, bool bf16, bool channels_last) {
  namespace defense = bulwark::defense;
  namespace attack = bulwark::attack;
  const auto d = bulwark::data::load_dataset("fashion-mnist", bulwark::data::Split::kTrain).head(images);
  defense::AdversarialSettings s{{attack::Norm::kLinf, 0.1, 0.0, 1.0}, 0.0, 0,
                                 bf16 ? attack::Precision::kBf16 : attack::Precision::kFp32};
  defense::PgdAtObjective pgd7(s, 7);
  auto m = bulwark::model::create_model("cnn", bulwark::model::default_spec(), 0);
  const auto opts =
      bulwark::train::TrainOptions().epochs(1).batch_size(batch).channels_last(channels_last).progress(false);
  bulwark::train::fit(m, d.head(std::min<int64_t>(images, 4 * batch)), {}, opts, pgd7);  // warm-up
  const auto t0 = std::chrono::steady_clock::now();
  const auto ranges = bulwark::bench::profile_ranges(false, [&] { bulwark::train::fit(m, d, {}, opts, pgd7); });
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  bulwark::bench::print_self_time(ranges, "per-op self time, pgd-7-at " + std::string(bf16 ? "bf16" : "fp32") +
                                              (channels_last ? ", channels-last" : ", nchw") + ", " +
                                              std::to_string(images) + " images, batch " + std::to_string(batch) +
                                              " (" + std::to_string(secs) + " s profiled)",
                                  30);
  return 0;
}

int precision_mode(int64_t images, int64_t batch, int64_t epochs, bool bf16_first) {
  namespace defense = bulwark::defense;
  namespace attack = bulwark::attack;
  const auto d = bulwark::data::load_dataset("fashion-mnist", bulwark::data::Split::kTrain).head(images);
  const auto test = bulwark::data::load_dataset("fashion-mnist", bulwark::data::Split::kTest).head(1000);
  const auto x = test.inputs(), y = test.targets();
  struct Side {
    attack::Precision precision;
    bool untouched;
    bool channels_last;
    std::vector<double> epoch_s;
    double clean = 0, robust = 0;
    std::string name() const {
      return attack::to_string(precision) + (untouched ? " untouched" : channels_last ? "" : " nchw");
    }
  };
  std::vector<Side> sides = {{attack::Precision::kFp32, true, false, {}},
                             {attack::Precision::kFp32, false, false, {}},
                             {attack::Precision::kFp32, false, true, {}},
                             {attack::Precision::kBf16, false, true, {}}};
  // One side: `epochs` epochs of PGD-7-AT from the same initial weights, then its accuracies.
  auto run_side = [&](Side& side) {
    defense::AdversarialSettings s{{attack::Norm::kLinf, 0.1, 0.0, 1.0}, 0.0, 0, side.precision};
    defense::PgdAtObjective pgd7(s, 7);
    auto m = bulwark::model::create_model("cnn", bulwark::model::default_spec(), 0);
    m.use_forward_graph(!side.untouched);
    const auto t0 = std::chrono::steady_clock::now();
    bulwark::train::fit(
        m, d, {},
        bulwark::train::TrainOptions().epochs(epochs).batch_size(batch).channels_last(side.channels_last).progress(false),
        pgd7);
    side.epoch_s.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() /
                           static_cast<double>(epochs));
    std::fprintf(stderr, "pgd-7-at %s: %.1f s per epoch\n", side.name().c_str(), side.epoch_s.back());
    m.set_parameters_require_grad(false);
    attack::SuiteOptions o;
    o.attacks = {"pgd"};
    o.eps = {0.1};
    o.progress = false;
    o.masking_checks = false;
    const auto rep = attack::evaluate_robustness(attack::logits_of(m), x, y, o);
    side.clean = rep.clean_accuracy;
    side.robust = rep.rows[0].robust_accuracy;
  };
  if (bulwark::bench::child_side() == "untouched") {
    run_side(sides[0]);
    std::printf("{\"epoch_s\":%.3f,\"clean\":%.6f,\"robust\":%.6f}\n", sides[0].epoch_s[0], sides[0].clean,
                sides[0].robust);
    return 0;
  }
  // Run in the order asked (the sides run one after the other; run both orders on a shared machine).
  for (size_t k = 0; k < sides.size(); ++k) {
    auto& side = sides[bf16_first ? sides.size() - 1 - k : k];
    if (!side.untouched) {
      run_side(side);
      continue;
    }
    const auto j = bulwark::bench::run_child("untouched", {"precision", std::to_string(images), std::to_string(batch),
                                                           std::to_string(epochs)});
    if (j.is_null()) return 1;
    side.epoch_s.push_back(j["epoch_s"].get<double>());
    side.clean = j["clean"].get<double>();
    side.robust = j["robust"].get<double>();
    std::fprintf(stderr, "pgd-7-at %s (child, default malloc): %.1f s per epoch\n", side.name().c_str(),
                 side.epoch_s.back());
  }
  auto total = [](const Side& s) {
    double t = 0;
    for (double v : s.epoch_s) t += v;
    return t / static_cast<double>(s.epoch_s.size());
  };
  std::printf("harden precision: pgd-7-at on the cnn, %lld images, batch %lld, %lld epoch(s), %d threads\n",
              static_cast<long long>(images), static_cast<long long>(batch), static_cast<long long>(epochs),
              torch::get_num_threads());
  for (const auto& side : sides) {
    std::printf("  %-15s %8.1f s/epoch  %5.3fx untouched   clean %5.1f%%  pgd-20 robust %5.1f%%\n",
                side.name().c_str(), total(side), total(side) / total(sides[0]), 100 * side.clean, 100 * side.robust);
  }
  std::printf("{\"bench\":\"harden_precision\",\"images\":%lld,\"epochs\":%lld,\"untouched_fp32_epoch_seconds\":%.2f,"
              "\"fp32_nchw_epoch_seconds\":%.2f,\"fp32_epoch_seconds\":%.2f,\"bf16_epoch_seconds\":%.2f,"
              "\"fp32_nchw_ratio\":%.3f,\"fp32_ratio\":%.3f,\"bf16_ratio\":%.3f,"
              "\"untouched_clean\":%.4f,\"fp32_nchw_clean\":%.4f,\"fp32_clean\":%.4f,\"bf16_clean\":%.4f,"
              "\"untouched_robust\":%.4f,\"fp32_nchw_robust\":%.4f,\"fp32_robust\":%.4f,\"bf16_robust\":%.4f}\n",
              static_cast<long long>(images), static_cast<long long>(epochs), total(sides[0]), total(sides[1]),
              total(sides[2]), total(sides[3]), total(sides[1]) / total(sides[0]), total(sides[2]) / total(sides[0]),
              total(sides[3]) / total(sides[0]), sides[0].clean, sides[1].clean, sides[2].clean, sides[3].clean,
              sides[0].robust, sides[1].robust, sides[2].robust, sides[3].robust);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  namespace defense = bulwark::defense;
  if (bulwark::bench::child_side().empty()) bulwark::tune_process_for_tensor_work();  // as the bulwark CLI
  if (argc > 1 && std::string(argv[1]) == "profile") {
    torch::set_num_threads(bulwark::hardware_threads());
    return profile_mode(argc > 2 ? std::atoll(argv[2]) : 2560, argc > 3 ? std::atoll(argv[3]) : 128,
                        argc > 4 && std::string(argv[4]) == "bf16", !(argc > 5 && std::string(argv[5]) == "nchw"));
  }
  if (argc > 1 && std::string(argv[1]) == "precision") {
    torch::set_num_threads(bulwark::hardware_threads());
    return precision_mode(argc > 2 ? std::atoll(argv[2]) : 60000, argc > 3 ? std::atoll(argv[3]) : 128,
                          argc > 4 ? std::atoll(argv[4]) : 1, argc > 5 && std::string(argv[5]) == "bf16");
  }
  const int64_t images = argc > 1 ? std::atoll(argv[1]) : 60000;
  const int64_t batch = argc > 2 ? std::atoll(argv[2]) : 128;
  const int pairs = argc > 3 ? std::atoi(argv[3]) : 0;
  torch::set_num_threads(bulwark::hardware_threads());
  const auto d = bulwark::data::load_dataset("fashion-mnist", bulwark::data::Split::kTrain).head(images);
  const defense::AdversarialSettings s{{bulwark::attack::Norm::kLinf, 0.1, 0.0, 1.0}, 0.0, 0};

  bulwark::train::CrossEntropyObjective standard;
  defense::FastAtObjective fast(s);
  defense::PgdAtObjective pgd7(s, 7);
  defense::TradesObjective trades(s, 6.0, 7);
  if (pairs > 0) {
    std::vector<double> ratios;
    for (int p = 0; p < pairs; ++p) {
      const double a = epoch_seconds(d, batch, standard), b = epoch_seconds(d, batch, fast);
      ratios.push_back(b / a);
      std::printf("  pair %d: standard %.1f s, fast-at %.1f s, ratio %.3f\n", p + 1, a, b, b / a);
      std::fflush(stdout);
    }
    std::sort(ratios.begin(), ratios.end());
    std::printf("harden: cnn, %lld images, %d threads: fast-at / standard epoch, median of %d pairs = %.3f (goal <= 2.2)\n",
                static_cast<long long>(images), torch::get_num_threads(), pairs, ratios[ratios.size() / 2]);
    return 0;
  }
  std::vector<std::pair<std::string, bulwark::train::Objective*>> methods = {
      {"standard", &standard}, {"fast-at", &fast}, {"pgd-7-at", &pgd7}, {"trades-7", &trades}};
  std::vector<double> seconds;
  for (const auto& [name, objective] : methods) {
    seconds.push_back(epoch_seconds(d, batch, *objective));
    std::fprintf(stderr, "%s: %.1fs\n", name.c_str(), seconds.back());
  }
  std::printf("harden: cnn, %lld images, batch %lld, linf eps 0.1, %d threads, %s\n", static_cast<long long>(images),
              static_cast<long long>(batch), torch::get_num_threads(), bulwark::loaded_blas().c_str());
  std::printf("{\"bench\":\"harden\"");
  for (size_t i = 0; i < methods.size(); ++i) {
    std::fprintf(stdout, ",\"%s_seconds\":%.2f,\"%s_ratio\":%.3f", methods[i].first.c_str(), seconds[i],
                 methods[i].first.c_str(), seconds[i] / seconds[0]);
  }
  std::printf("}\n");
  for (size_t i = 0; i < methods.size(); ++i) {
    std::printf("  %-10s %8.1f s/epoch  %5.2fx standard%s\n", methods[i].first.c_str(), seconds[i],
                seconds[i] / seconds[0],
                methods[i].first == "fast-at" ? "  (goal <= 2.2x)" : methods[i].first == "pgd-7-at" ? "  (goal <= 8.2x)" : "");
  }
  return 0;
}
