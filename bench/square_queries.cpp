// bench/square_queries — Square's L∞ queries on the window engine (model/window_forward.h) beside the
// frozen copy (model/frozen_forward.h), on the points an attack leaves Square in `auto`: the first n
// Fashion-MNIST test images still standing after APGD-CE (eps 0.1, 100 iterations). Times Square
// (eps 0.1, `queries` per point) both ways in one process, alternated per round, and prints a per-op
// self-time profile of each over a shorter run (the p schedule scales with the budget, so the
// window sizes keep their proportions).
//
// usage: square_queries MODEL [n=200] [queries=5000] [rounds=1] [threads=2] [profile_queries=500]
#include <torch/torch.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "attack/attack.h"
#include "core/system.h"
#include "data/dataset.h"
#include "model/model.h"
#include "model/window_forward.h"
#include "profile.h"

namespace {

namespace attack = bulwark::attack;
using Clock = std::chrono::steady_clock;

struct Side {
  const char* name;
  attack::LogitsFn f;
  std::vector<double> seconds;
  double robust = -1;
  int64_t forwards = 0;
};

}  // namespace

int main(int argc, char** argv) try {
  if (argc < 2) {
    std::fprintf(stderr, "usage: square_queries MODEL [n=200] [queries=5000] [rounds=1] [threads=2] [profile_queries=500]\n");
    return 2;
  }
  bulwark::tune_process_for_tensor_work();  // as the bulwark CLI
  const int64_t n = argc > 2 ? std::atoll(argv[2]) : 200;
  const int64_t queries = argc > 3 ? std::atoll(argv[3]) : 5000;
  const int rounds = argc > 4 ? std::atoi(argv[4]) : 1;
  const int threads = argc > 5 ? std::atoi(argv[5]) : 2;
  const int64_t profile_queries = argc > 6 ? std::atoll(argv[6]) : 500;
  torch::set_num_threads(threads);
  auto m = bulwark::model::Model::load(argv[1]);
  m.set_parameters_require_grad(false);
  const auto test = bulwark::data::load_dataset("fashion-mnist", bulwark::data::Split::kTest).head(n);
  torch::Tensor x = test.inputs(), y = test.targets();

  Side engine{"window engine", attack::logits_of(m)};
  Side frozen{"frozen copy", attack::logits_of(m)};
  frozen.f.with_window_forward(nullptr);
  // Square's points in `auto`: those APGD-CE leaves standing.
  attack::Apgd apgd(attack::ApgdOptions(0.1).steps(100));
  const auto after_apgd = apgd.perturb(engine.f, x, y);
  const auto standing = m.predict_logits(after_apgd).argmax(1).eq(y).nonzero().squeeze(1);
  x = x.index_select(0, standing);
  y = y.index_select(0, standing);
  const auto made = engine.f.window_forward(x.size(0));
  std::printf("square_queries: %s, %lld of %lld test images standing after APGD-CE, L-inf eps 0.1, %lld queries, "
              "%d threads\n  window engine: %s\n",
              argv[1], static_cast<long long>(x.size(0)), static_cast<long long>(n), static_cast<long long>(queries),
              threads,
              made ? ("used, " + std::to_string(made->cache_bytes_per_image()) + " bytes of cache per point").c_str()
                   : "declined (the model does not qualify): both sides run the frozen copy");

  auto run = [&](Side& s, int64_t budget) {
    attack::Square sq(attack::SquareOptions(0.1).queries(budget));
    const auto t0 = Clock::now();
    const auto adv = sq.perturb(s.f, x, y);
    const double dt = std::chrono::duration<double>(Clock::now() - t0).count();
    s.robust = m.predict_logits(adv).argmax(1).eq(y).to(torch::kFloat).mean().item<double>();
    s.forwards = sq.cost().forward_passes;
    return dt;
  };
  for (int r = 0; r < rounds; ++r) {
    for (Side* s : r % 2 == 0 ? std::vector<Side*>{&engine, &frozen} : std::vector<Side*>{&frozen, &engine}) {
      s->seconds.push_back(run(*s, queries));
      std::fprintf(stderr, "round %d: %-14s %7.2f s, robust %.1f%%\n", r + 1, s->name, s->seconds.back(),
                   100 * s->robust);
    }
  }
  nlohmann::json out = {{"bench", "square_queries"}, {"points", x.size(0)}, {"queries", queries}};
  std::printf("  %-14s %9s %9s %12s %9s\n", "side", "seconds", "ratio", "image fwds", "robust");
  for (Side* s : {&engine, &frozen}) {
    std::sort(s->seconds.begin(), s->seconds.end());
    const double med = s->seconds[s->seconds.size() / 2];
    std::sort(frozen.seconds.begin(), frozen.seconds.end());
    const double ref = frozen.seconds[frozen.seconds.size() / 2];
    std::printf("  %-14s %9.2f %9.3f %12lld %8.1f%%\n", s->name, med, med / ref, static_cast<long long>(s->forwards),
                100 * s->robust);
    out["sides"].push_back({{"side", s->name}, {"seconds", med}, {"robust_accuracy", s->robust}});
  }
  for (Side* s : {&engine, &frozen}) {
    const auto ranges = bulwark::bench::profile_ranges(false, [&] { (void)run(*s, profile_queries); });
    bulwark::bench::print_self_time(ranges, std::string("per-op self time, Square with ") +
                                                std::to_string(profile_queries) + " queries, " + s->name);
  }
  std::printf("%s\n", out.dump().c_str());
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "square_queries: %s\n", e.what());
  return 1;
}
