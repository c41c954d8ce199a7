// bench/harden — one epoch of standard training, Fast-AT, PGD-7-AT and TRADES (7 steps) on the
// zoo `cnn`, measured in the same run, reported as ratios to the standard epoch
// (goals: Fast-AT <= 2.2x, PGD-7 <= 8.2x).
//
// usage: harden [images=60000 (full Fashion-MNIST training set)] [batch=128] [pairs=0]
// With pairs > 0, only standard and Fast-AT run, alternating, `pairs` times; the Fast-AT figure is
// the median of the per-pair ratios, so drift on a shared machine hits both sides of each pair.
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "core/system.h"
#include "data/dataset.h"
#include "defense/objectives.h"
#include "model/zoo.h"
#include "train/trainer.h"

namespace {

double epoch_seconds(const bulwark::data::Dataset& d, int64_t batch, bulwark::train::Objective& objective) {
  auto m = bulwark::model::create_model("cnn", bulwark::model::default_spec(), 0);
  const auto t0 = std::chrono::steady_clock::now();
  bulwark::train::fit(m, d, {}, bulwark::train::TrainOptions().epochs(1).batch_size(batch).progress(false), objective);
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

int main(int argc, char** argv) {
  namespace defense = bulwark::defense;
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
