// bench/train_throughput — `bulwark train`'s loop (train::fit on the TorchScript zoo `cnn`)
// against a bare LibTorch loop (torch::nn modules, Adam, same batch), alternated in one run so
// machine noise hits both alike. Prints images/s for each and the ratio (goal >= 0.95).
//
// usage: train_throughput [images_per_round=8192] [rounds=7] [batch=128] [only=bare|bulwark]
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "bare_cnn.h"
#include "core/system.h"
#include "data/dataset.h"
#include "model/zoo.h"
#include "train/trainer.h"

namespace {

using Clock = std::chrono::steady_clock;

double bare_round(const bulwark::data::Dataset& d, int64_t batch, uint64_t seed) {
  torch::manual_seed(seed);
  auto net = std::make_shared<bulwark::bench::BareCnn>();
  torch::optim::Adam opt(net->parameters(), torch::optim::AdamOptions(1e-3));
  const auto order = torch::randperm(d.size());
  const auto t0 = Clock::now();
  for (int64_t start = 0; start < d.size(); start += batch) {
    const auto idx = order.narrow(0, start, std::min(batch, d.size() - start));
    const auto x = d.images.index_select(0, idx).to(torch::kFloat32).div_(255.0f);
    const auto y = d.labels.index_select(0, idx);
    opt.zero_grad();
    auto loss = torch::nn::functional::cross_entropy(net->forward(x), y);
    loss.backward();
    opt.step();
    (void)loss.item<float>();  // the bare loop also reads its loss each step
  }
  return static_cast<double>(d.size()) / std::chrono::duration<double>(Clock::now() - t0).count();
}

double bulwark_round(const bulwark::data::Dataset& d, int64_t batch, uint64_t seed) {
  auto m = bulwark::model::create_model("cnn", bulwark::model::default_spec(), seed);
  bulwark::train::CrossEntropyObjective ce;
  const auto opts = bulwark::train::TrainOptions().epochs(1).batch_size(batch).seed(seed).progress(false);
  const auto r = bulwark::train::fit(m, d, {}, opts, ce);
  return r.epochs.at(0).images_per_s;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  const int64_t images = argc > 1 ? std::atoll(argv[1]) : 8192;
  const int rounds = argc > 2 ? std::atoi(argv[2]) : 7;
  const int64_t batch = argc > 3 ? std::atoll(argv[3]) : 128;
  torch::set_num_threads(bulwark::hardware_threads());
  const auto d = bulwark::data::load_dataset("fashion-mnist", bulwark::data::Split::kTrain).head(images);
  // `only=bare|bulwark` as 4th argument runs one side once, for instruction counting under
  // valgrind --tool=callgrind (repeatable whatever the machine's load).
  const std::string only = argc > 4 ? argv[4] : "";
  if (only == "bare" || only == "bulwark") {
    const double v = only == "bare" ? bare_round(d, batch, 0) : bulwark_round(d, batch, 0);
    std::printf("%s %.0f img/s\n", only.c_str(), v);
    return 0;
  }
  bulwark_round(d.head(batch * 4), batch, 99);  // warm both paths (allocator, first-call setup)
  bare_round(d.head(batch * 4), batch, 99);
  // Pairs alternate which loop goes first; the ratio is the median of per-pair ratios, so a
  // slow spell on the shared machine hits both sides of a pair.
  std::vector<double> bare, ours, ratios;
  for (int r = 0; r < rounds; ++r) {
    const auto seed = static_cast<uint64_t>(r);
    double o, b;
    if (r % 2 == 0) {
      o = bulwark_round(d, batch, seed);
      b = bare_round(d, batch, seed);
    } else {
      b = bare_round(d, batch, seed);
      o = bulwark_round(d, batch, seed);
    }
    ours.push_back(o);
    bare.push_back(b);
    ratios.push_back(o / b);
    std::fprintf(stderr, "round %d: bulwark %.0f img/s, bare %.0f img/s, ratio %.3f\n", r + 1, o, b, o / b);
  }
  const double b = median(bare), o = median(ours), ratio = median(ratios);
  std::printf("train_throughput: cnn, batch %lld, %lld images x %d rounds, %d threads, %s\n",
              static_cast<long long>(batch), static_cast<long long>(images), rounds, torch::get_num_threads(),
              bulwark::loaded_blas().c_str());
  std::printf("  bare LibTorch loop   %8.0f img/s (median)\n", b);
  std::printf("  bulwark train loop   %8.0f img/s (median)\n", o);
  std::printf("  ratio bulwark/bare   %8.3f   (median of paired rounds; goal >= 0.95)\n", ratio);
  std::printf("{\"bench\":\"train_throughput\",\"bare_images_per_s\":%.1f,\"bulwark_images_per_s\":%.1f,\"ratio\":%.4f}\n",
              b, o, ratio);
  return 0;
}
