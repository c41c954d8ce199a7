// bench/stateful_evasion — the query-similarity detector (detect/stateful.h) against the adaptive
// attacks of issue 31, at the detector's own interface (each query exactly as the server would
// observe it, one client per attacked image):
//   square      Square (L∞, eps 0.1) against MODEL: queries until the client is flagged;
//   square+noise  the same, every query sent with U(-0.04, 0.04) noise added (the attacker's padding);
//   benign      the 10,000 Fashion-MNIST test images replayed by one client: hits, flagged;
//   camera      frames of one scene with N(0, (2/255)^2) sensor noise, per client: hits in 6 frames.
// usage: stateful_evasion MODEL [n=40] [queries=500] [pool=1] [window=20] [match=25] [top_k=50] [step=50]
#include <torch/torch.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <vector>

#include "attack/attack.h"
#include "data/dataset.h"
#include "detect/stateful.h"
#include "model/model.h"

namespace {

namespace attack = bulwark::attack;
namespace detect = bulwark::detect;

detect::StatefulOptions options(int argc, char** argv) {
  auto arg = [&](int i, int def) { return argc > i ? std::atoi(argv[i]) : def; };
  detect::StatefulOptions o;
  o.pool(arg(4, 1)).window(arg(5, 20)).match_threshold(arg(6, 25)).top_k(arg(7, 50)).quant_step(arg(8, 50));
  o.hits_to_flag(3).policy(detect::Policy::kBlock).key(0x5eed);
  return o;
}

// Square on n points, each point's queries observed as one client's; queries to the flag per point.
std::vector<int64_t> square_to_flag(bulwark::model::Model& m, const torch::Tensor& x, const torch::Tensor& y,
                                    const detect::StatefulOptions& o, int64_t queries, double noise) {
  detect::StatefulDetector d(o);
  const int64_t n = x.size(0);
  std::vector<int64_t> sent(static_cast<size_t>(n), 0), flagged_at(static_cast<size_t>(n), -1);
  auto logits = attack::logits_of(m);
  attack::AttackSettings s;
  s.square_queries = queries;
  s.seed = 0;
  bulwark::model::FrozenParameters frozen(m);
  for (int64_t i = 0; i < n; ++i) {  // one point at a time: the rows of each call are that point's queries
    const attack::LogitsFn one = [&, i](const torch::Tensor& q) {
      auto sent_q = q;
      if (noise > 0) sent_q = (q + torch::empty_like(q).uniform_(-noise, noise)).clamp(0, 1);
      const auto flat = sent_q.detach().contiguous().to(torch::kFloat).reshape({q.size(0), -1});
      for (int64_t r = 0; r < q.size(0); ++r) {
        const auto v = d.observe("p" + std::to_string(i), flat[r].data_ptr<float>(), flat.size(1), 0.0);
        ++sent[static_cast<size_t>(i)];
        if (v.flagged && flagged_at[static_cast<size_t>(i)] < 0) flagged_at[static_cast<size_t>(i)] = sent[static_cast<size_t>(i)];
      }
      return logits(sent_q);
    };
    attack::make_attack("square", 0.1, s)->perturb(one, x.narrow(0, i, 1), y.narrow(0, i, 1));
  }
  return flagged_at;
}

void summarise(const char* name, const std::vector<int64_t>& at) {
  std::vector<int64_t> flagged;
  for (auto v : at) {
    if (v > 0) flagged.push_back(v);
  }
  std::sort(flagged.begin(), flagged.end());
  const auto med = flagged.empty() ? -1 : flagged[flagged.size() / 2];
  std::printf("%-14s flagged %3zu/%zu  queries to flag: median %lld, max %lld\n", name, flagged.size(), at.size(),
              static_cast<long long>(med), static_cast<long long>(flagged.empty() ? -1 : flagged.back()));
}

}  // namespace

int main(int argc, char** argv) try {
  if (argc < 2) {
    std::fprintf(stderr, "usage: stateful_evasion MODEL [n] [queries] [pool] [window] [match] [top_k] [step]\n");
    return 2;
  }
  torch::manual_seed(0);
  auto m = bulwark::model::Model::load(argv[1]);
  m.set_training(false);
  const int64_t n = argc > 2 ? std::atoll(argv[2]) : 40, queries = argc > 3 ? std::atoll(argv[3]) : 500;
  const auto o = options(argc, argv);
  std::printf("stateful options: %s\n", o.to_json().dump().c_str());
  const auto test = bulwark::data::load_dataset("fashion-mnist", bulwark::data::Split::kTest);
  const auto x = test.inputs(torch::arange(n)), y = test.targets(torch::arange(n));
  summarise("square", square_to_flag(m, x, y, o, queries, 0));
  summarise("square+noise", square_to_flag(m, x, y, o, queries, 0.04));

  // Benign replay: 10,000 distinct test images from one client.
  {
    detect::StatefulDetector d(o);
    const auto all = test.inputs().contiguous().reshape({test.size(), -1});
    int64_t hits = 0, first_flag = -1;
    for (int64_t i = 0; i < all.size(0); ++i) {
      const auto v = d.observe("replay", all[i].data_ptr<float>(), all.size(1), static_cast<double>(i) * 0.01);
      hits += v.hit;
      if (v.flagged && first_flag < 0) first_flag = i;
    }
    std::printf("%-14s %lld hits in %lld distinct images; flagged at %lld (-1: never)\n", "benign", static_cast<long long>(hits),
                static_cast<long long>(all.size(0)), static_cast<long long>(first_flag));
  }
  // Camera: 6 frames of one scene, N(0, 2/255) per pixel, for 100 scenes (one client each).
  {
    detect::StatefulDetector d(o);
    int64_t flagged = 0, hits = 0;
    for (int64_t s = 0; s < 100; ++s) {
      const auto scene = test.inputs(torch::tensor({s})).reshape({-1});
      bool f = false;
      for (int k = 0; k < 6; ++k) {
        const auto frame = (scene + torch::randn_like(scene) * (2.0 / 255)).clamp(0, 1).contiguous();
        const auto v = d.observe("cam" + std::to_string(s), frame.data_ptr<float>(), frame.numel(), k * 1.0);
        hits += v.hit;
        f = f || v.flagged;
      }
      flagged += f;
    }
    std::printf("%-14s %lld of 100 six-frame streams flagged (%lld hits)\n", "camera", static_cast<long long>(flagged),
                static_cast<long long>(hits));
  }
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "stateful_evasion: %s\n", e.what());
  return 1;
}
