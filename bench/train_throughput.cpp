// bench/train_throughput — `bulwark train`'s loop (train::fit on a TorchScript zoo model) against a
// bare LibTorch loop (the same architecture as torch::nn modules, same optimizer, same batch),
// alternated in one run so machine noise hits both alike. Prints images/s for each and the ratio
// (goal >= 0.95).
//  - cnn (default): Fashion-MNIST, Adam, as `bulwark train --model cnn`.
//  - resnet18: the CIFAR ResNet-18 on 3x32x32 (random pixels and labels: the speed does not depend
//    on them), SGD momentum 0.9, weight decay 5e-4, as `bulwark train --model resnet18 --optimizer sgd`.
//    Augmentation is off on both sides (it is a data step; `bulwark train` turns it on for RGB).
//
// usage: train_throughput [images_per_round=8192] [rounds=7] [batch=128] [only=bare|bulwark|-] [arch=cnn|resnet18]
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <string>
#include <vector>

#include "bare_cnn.h"
#include "bare_resnet.h"
#include "core/system.h"
#include "data/dataset.h"
#include "model/zoo.h"
#include "train/trainer.h"

namespace {

using Clock = std::chrono::steady_clock;

// CPU seconds used by every thread of this process: unlike wall clock, it does not count time
// spent waiting while other tenants of a shared machine hold the cores.
double process_cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

struct Rate {
  double wall = 0;  // images per wall-clock second
  double cpu = 0;   // images per CPU second
};

constexpr double kSgdLr = 0.05, kSgdWeightDecay = 5e-4;

std::string g_arch = "cnn";

template <typename Net>
Rate bare_loop(const bulwark::data::Dataset& d, int64_t batch, const std::shared_ptr<Net>& net,
               torch::optim::Optimizer& opt) {
  const auto order = torch::randperm(d.size());
  const auto t0 = Clock::now();
  const double c0 = process_cpu_seconds();
  for (int64_t start = 0; start < d.size(); start += batch) {
    const auto idx = order.narrow(0, start, std::min(batch, d.size() - start));
    const auto x = d.images.index_select(0, idx).to(torch::kFloat32).div_(255.0f);
    const auto y = d.labels.index_select(0, idx);
    opt.zero_grad();
    auto loss = torch::nn::functional::cross_entropy(net->forward(x), y);
    loss.backward();
    opt.step();
    (void)loss.template item<float>();  // the bare loop also reads its loss each step
  }
  const double n = static_cast<double>(d.size());
  return {n / std::chrono::duration<double>(Clock::now() - t0).count(), n / (process_cpu_seconds() - c0)};
}

Rate bare_round(const bulwark::data::Dataset& d, int64_t batch, uint64_t seed) {
  torch::manual_seed(seed);
  if (g_arch == "resnet18") {
    auto net = std::make_shared<bulwark::bench::BareResNet18>(3, 10);
    net->train();
    torch::optim::SGD opt(net->parameters(),
                          torch::optim::SGDOptions(kSgdLr).momentum(0.9).weight_decay(kSgdWeightDecay));
    return bare_loop(d, batch, net, opt);
  }
  auto net = std::make_shared<bulwark::bench::BareCnn>();
  torch::optim::Adam opt(net->parameters(), torch::optim::AdamOptions(1e-3));
  return bare_loop(d, batch, net, opt);
}

Rate bulwark_round(const bulwark::data::Dataset& d, int64_t batch, uint64_t seed) {
  bulwark::model::ModelSpec spec = bulwark::model::default_spec();
  auto opts = bulwark::train::TrainOptions().epochs(1).batch_size(batch).seed(seed).progress(false);
  if (g_arch == "resnet18") {
    spec.input_shape = {3, 32, 32};
    opts.optimizer("sgd").lr(kSgdLr).weight_decay(kSgdWeightDecay);
  }
  auto m = bulwark::model::create_model(g_arch, spec, seed);
  bulwark::train::CrossEntropyObjective ce;
  const auto t0 = Clock::now();
  const double c0 = process_cpu_seconds();
  bulwark::train::fit(m, d, {}, opts, ce);
  const double n = static_cast<double>(d.size());
  return {n / std::chrono::duration<double>(Clock::now() - t0).count(), n / (process_cpu_seconds() - c0)};
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
  g_arch = argc > 5 ? argv[5] : "cnn";
  if (g_arch != "cnn" && g_arch != "resnet18") {
    std::fprintf(stderr, "train_throughput: arch must be cnn or resnet18, got %s\n", g_arch.c_str());
    return 2;
  }
  bulwark::data::Dataset d;
  if (g_arch == "resnet18") {
    torch::manual_seed(1234);
    d.name = "random-rgb";
    d.images = torch::randint(0, 256, {images, 3, 32, 32}, torch::kUInt8);
    d.labels = torch::randint(0, 10, {images}, torch::kInt64);
    for (int c = 0; c < 10; ++c) d.class_names.push_back("class" + std::to_string(c));
    // Both sides must be the same network: the same parameter count (11,173,962 for 10 classes).
    bulwark::model::ModelSpec spec = bulwark::model::default_spec();
    spec.input_shape = {3, 32, 32};
    int64_t ours = 0, bare = 0;
    for (const auto& p : bulwark::model::create_model("resnet18", spec, 0).parameters()) ours += p.numel();
    for (const auto& p : bulwark::bench::BareResNet18(3, 10).parameters()) bare += p.numel();
    std::printf("resnet18 parameters: bulwark %lld, bare %lld\n", static_cast<long long>(ours),
                static_cast<long long>(bare));
    if (ours != bare) return 1;
  } else {
    d = bulwark::data::load_dataset("fashion-mnist", bulwark::data::Split::kTrain).head(images);
  }
  // `only=bare|bulwark` as 4th argument runs one side once, for instruction counting under
  // valgrind --tool=callgrind (repeatable whatever the machine's load); "-" runs the pairs.
  const std::string only = argc > 4 ? argv[4] : "";
  if (only == "bare" || only == "bulwark") {
    const Rate v = only == "bare" ? bare_round(d, batch, 0) : bulwark_round(d, batch, 0);
    std::printf("%s %.0f img/s\n", only.c_str(), v.wall);
    return 0;
  }
  bulwark_round(d.head(batch * 4), batch, 99);  // warm both paths (allocator, first-call setup)
  bare_round(d.head(batch * 4), batch, 99);
  // Pairs alternate which loop goes first; ratios are medians of per-pair ratios, so a slow spell
  // on the shared machine hits both sides of a pair.
  std::vector<double> bare, ours, ratios, cpu_ratios;
  for (int r = 0; r < rounds; ++r) {
    const auto seed = static_cast<uint64_t>(r);
    Rate o, b;
    if (r % 2 == 0) {
      o = bulwark_round(d, batch, seed);
      b = bare_round(d, batch, seed);
    } else {
      b = bare_round(d, batch, seed);
      o = bulwark_round(d, batch, seed);
    }
    ours.push_back(o.wall);
    bare.push_back(b.wall);
    ratios.push_back(o.wall / b.wall);
    cpu_ratios.push_back(o.cpu / b.cpu);
    std::fprintf(stderr, "round %d: bulwark %.0f img/s, bare %.0f img/s, ratio %.3f (cpu-time ratio %.3f)\n", r + 1,
                 o.wall, b.wall, o.wall / b.wall, o.cpu / b.cpu);
  }
  const double b = median(bare), o = median(ours), ratio = median(ratios), cpu_ratio = median(cpu_ratios);
  std::printf("train_throughput: %s, batch %lld, %lld images x %d rounds, %d threads, %s\n",
              g_arch.c_str(), static_cast<long long>(batch), static_cast<long long>(images), rounds, torch::get_num_threads(),
              bulwark::loaded_blas().c_str());
  std::printf("  bare LibTorch loop   %8.0f img/s (median)\n", b);
  std::printf("  bulwark train loop   %8.0f img/s (median)\n", o);
  std::printf("  ratio bulwark/bare   %8.3f   (wall clock, median of paired rounds; goal >= 0.95)\n", ratio);
  std::printf("  ratio bulwark/bare   %8.3f   (process CPU time, median of paired rounds)\n", cpu_ratio);
  std::printf("{\"bench\":\"train_throughput\",\"arch\":\"%s\",\"bare_images_per_s\":%.1f,\"bulwark_images_per_s\":%.1f,\"ratio\":%.4f,"
              "\"cpu_time_ratio\":%.4f}\n",
              g_arch.c_str(), b, o, ratio, cpu_ratio);
  return 0;
}
