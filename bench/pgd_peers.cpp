// bench/pgd_peers — Bulwark's PGD beside torchattacks and ART (bench/pgd_peers.py) on one model and
// the same test images: PGD-20, L∞, step eps/4, one random start, cross-entropy (the three
// libraries' shared setting). Two Bulwark rows:
//   equal work   every point takes all 20 steps and the last iterate is judged, as torchattacks and
//                ART do (PgdOptions::early_stop(false));
//   as shipped   `bulwark attack`'s evaluation mode: a point leaves the batch once it is misclassified
//                (robust accuracy counts it as broken), which is less work on a weak model.
// One JSON line per row: seconds, robust accuracy, points. The model must carry a spec
// (`bulwark import`); the data is what --data takes.
// usage: pgd_peers MODEL DATA [n=1000] [eps=0.0313725] [batch=256]
#include <torch/torch.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>

#include <nlohmann/json.hpp>

#include "attack/attack.h"
#include "core/system.h"
#include "data/dataset.h"
#include "model/model.h"

namespace attack = bulwark::attack;

int main(int argc, char** argv) try {
  if (argc < 3) {
    std::fprintf(stderr, "usage: pgd_peers MODEL DATA [n=1000] [eps=0.0313725] [batch=256]\n");
    return 2;
  }
  bulwark::tune_process_for_tensor_work();  // as the bulwark CLI does
  const int64_t n = argc > 3 ? std::atoll(argv[3]) : 1000, batch = argc > 5 ? std::atoll(argv[5]) : 256;
  const double eps = argc > 4 ? std::atof(argv[4]) : 8.0 / 255;
  auto m = bulwark::model::Model::load(argv[1]);
  m.set_training(false);
  const auto test = bulwark::data::load_dataset(argv[2], bulwark::data::Split::kTest);
  const auto idx = torch::arange(std::min<int64_t>(n, test.size()));
  const auto x = test.inputs(idx), y = test.targets(idx);
  auto logits = attack::logits_of(m);
  bulwark::model::FrozenParameters frozen(m);
  auto accuracy = [&](const torch::Tensor& xs) {
    torch::NoGradGuard g;
    int64_t correct = 0;
    for (int64_t i = 0; i < xs.size(0); i += batch) {
      const auto len = std::min(batch, xs.size(0) - i);
      correct += logits(xs.narrow(0, i, len)).argmax(1).eq(y.narrow(0, i, len)).sum().item<int64_t>();
    }
    return 100.0 * static_cast<double>(correct) / static_cast<double>(xs.size(0));
  };
  std::printf("%s\n", nlohmann::json{{"library", "clean"}, {"accuracy", accuracy(x)}, {"n", x.size(0)}}.dump().c_str());
  for (const bool early : {false, true}) {
    attack::PgdOptions o(eps);
    o.steps(20).step_size(eps / 4).restarts(1).early_stop(early).batch_size(batch).seed(0);
    attack::Pgd pgd(o);
    const auto t0 = std::chrono::steady_clock::now();
    const auto adv = pgd.perturb(logits, x, y);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("%s\n", nlohmann::json{{"library", early ? "bulwark (as shipped: early stop)" : "bulwark (equal work)"},
                                       {"seconds", s},
                                       {"robust_accuracy", accuracy(adv)},
                                       {"n", x.size(0)},
                                       {"threads", torch::get_num_threads()}}
                            .dump()
                            .c_str());
  }
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "pgd_peers: %s\n", e.what());
  return 1;
}
