// bench/stateful_evasion — the query-similarity detector (detect/stateful.h) against the adaptive
// attacks of issue 31, at the detector's own interface (each query exactly as the server would
// observe it, one client per attacked image):
//   square      Square (L∞, eps 0.1) against MODEL: queries until the client is flagged;
//   square+noise  the same, every query sent with U(-0.04, 0.04) noise added (the attacker's padding);
//   square+cells  the same with U(-0.04, 0.04) noise constant over each 2 x 2 cell (an attacker who
//                 knows the distance test's grid; stated limit 5 in detect/stateful.h);
//   nes(+noise) NES (Ilyas et al. 2018; Blacklight's evaluation): 25 antithetic Gaussian pairs per
//               gradient estimate (sigma 0.001), signed steps of eps/10 inside the L∞ eps 0.1 ball;
//   benign      the 10,000 Fashion-MNIST test images replayed by one client: hits, flagged;
//   camera      frames of one scene with N(0, (2/255)^2) sensor noise, per client: hits in 6 frames.
// usage: stateful_evasion MODEL [n=40] [queries=500] [distance=0.025] [grid=14] [window=20] [match=25] [top_k=50] [step=50]
// (distance 0: the Blacklight fingerprints alone, as before issue 31's noise line)
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
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
const detect::Shape kImage{1, 28, 28};

detect::StatefulOptions options(int argc, char** argv) {
  auto arg = [&](int i, int def) { return argc > i ? std::atoi(argv[i]) : def; };
  detect::StatefulOptions o;
  o.distance(argc > 4 ? std::atof(argv[4]) : 0.025).grid(arg(5, 14));
  o.window(arg(6, 20)).match_threshold(arg(7, 25)).top_k(arg(8, 50)).quant_step(arg(9, 50));
  o.hits_to_flag(3).policy(detect::Policy::kBlock).key(0x5eed);
  return o;
}

// Square on n points, each point's queries observed as one client's: per point, the queries to the
// flag (-1: never flagged) and the queries the attack sent in all (it stops when it fools the model).
struct Run {
  std::vector<int64_t> flagged_at, sent;
};
Run square_to_flag(bulwark::model::Model& m, const torch::Tensor& x, const torch::Tensor& y,
                                    const detect::StatefulOptions& o, int64_t queries, double noise, bool cell_noise) {
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
      if (noise > 0 && !cell_noise) sent_q = (q + torch::empty_like(q).uniform_(-noise, noise)).clamp(0, 1);
      if (noise > 0 && cell_noise) {  // one draw per 2 x 2 cell, repeated over its pixels
        const auto coarse = torch::empty({q.size(0), q.size(1), q.size(2) / 2, q.size(3) / 2}).uniform_(-noise, noise);
        sent_q = (q + coarse.repeat_interleave(2, 2).repeat_interleave(2, 3)).clamp(0, 1);
      }
      const auto flat = sent_q.detach().contiguous().to(torch::kFloat).reshape({q.size(0), -1});
      for (int64_t r = 0; r < q.size(0); ++r) {
        const auto v = d.observe("p" + std::to_string(i), flat[r].data_ptr<float>(), kImage, 0.0);
        ++sent[static_cast<size_t>(i)];
        if (v.flagged && flagged_at[static_cast<size_t>(i)] < 0) flagged_at[static_cast<size_t>(i)] = sent[static_cast<size_t>(i)];
      }
      return logits(sent_q);
    };
    attack::make_attack("square", 0.1, s)->perturb(one, x.narrow(0, i, 1), y.narrow(0, i, 1));
  }
  return {flagged_at, sent};
}

// NES on n points: each estimate sends 50 queries x + sigma u (u ~ N(0, I), antithetic pairs).
Run nes_to_flag(bulwark::model::Model& m, const torch::Tensor& x, const torch::Tensor& y, const detect::StatefulOptions& o,
                int64_t queries, double noise) {
  detect::StatefulDetector d(o);
  const int64_t n = x.size(0), pairs = 25;
  const double eps = 0.1, sigma = 0.001, step = eps / 10;
  Run run{std::vector<int64_t>(static_cast<size_t>(n), -1), std::vector<int64_t>(static_cast<size_t>(n), 0)};
  torch::NoGradGuard no_grad;
  auto logits = attack::logits_of(m);
  for (int64_t i = 0; i < n; ++i) {
    const auto x0 = x.narrow(0, i, 1);
    const int64_t label = y[i].item<int64_t>();
    auto adv = x0.clone();
    auto margin = [&](const torch::Tensor& z) {  // true-class logit minus the best other: < 0 is fooled
      auto other = z.clone();
      other.select(1, label).fill_(-1e9);
      return z.select(1, label) - std::get<0>(other.max(1));
    };
    auto send = [&](const torch::Tensor& q) {
      auto sent_q = q;
      if (noise > 0) sent_q = (q + torch::empty_like(q).uniform_(-noise, noise)).clamp(0, 1);
      const auto flat = sent_q.contiguous().reshape({q.size(0), -1});
      for (int64_t r = 0; r < q.size(0); ++r) {
        const auto v = d.observe("nes" + std::to_string(i), flat[r].data_ptr<float>(), kImage, 0.0);
        auto& sent = run.sent[static_cast<size_t>(i)];
        ++sent;
        if (v.flagged && run.flagged_at[static_cast<size_t>(i)] < 0) run.flagged_at[static_cast<size_t>(i)] = sent;
      }
      return margin(logits(sent_q));
    };
    while (run.sent[static_cast<size_t>(i)] + 2 * pairs <= queries && run.flagged_at[static_cast<size_t>(i)] < 0) {
      const auto u = torch::randn({pairs, 1, 28, 28});
      const auto q = torch::cat({adv + sigma * u, adv - sigma * u}).clamp(0, 1);
      const auto f = send(q);
      if ((f < 0).any().item<bool>()) break;  // a query already fooled the model
      const auto g = ((f.narrow(0, 0, pairs) - f.narrow(0, pairs, pairs)).view({pairs, 1, 1, 1}) * u).sum(0, true);
      adv = torch::min(torch::max(adv - step * g.sign(), x0 - eps), x0 + eps).clamp(0, 1);
    }
  }
  return run;
}

void summarise(const char* name, const Run& run) {
  std::vector<int64_t> flagged, unflagged;
  for (size_t i = 0; i < run.flagged_at.size(); ++i) {
    if (run.flagged_at[i] > 0) flagged.push_back(run.flagged_at[i]);
    else unflagged.push_back(run.sent[i]);
  }
  std::sort(flagged.begin(), flagged.end());
  std::sort(unflagged.begin(), unflagged.end());
  auto median = [](const std::vector<int64_t>& v) { return static_cast<long long>(v.empty() ? -1 : v[v.size() / 2]); };
  std::printf("%-14s flagged %3zu/%zu  queries to flag: median %lld, max %lld;  unflagged: %zu, their queries in all: "
              "median %lld\n",
              name, flagged.size(), run.flagged_at.size(), median(flagged),
              static_cast<long long>(flagged.empty() ? -1 : flagged.back()), unflagged.size(), median(unflagged));
}

}  // namespace

int main(int argc, char** argv) try {
  if (argc < 2) {
    std::fprintf(stderr, "usage: stateful_evasion MODEL [n] [queries] [distance] [grid] [window] [match] [top_k] [step]\n");
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
  summarise("square", square_to_flag(m, x, y, o, queries, 0, false));
  summarise("square+noise", square_to_flag(m, x, y, o, queries, 0.04, false));
  summarise("square+cells", square_to_flag(m, x, y, o, queries, 0.04, true));
  summarise("nes", nes_to_flag(m, x, y, o, queries, 0));
  summarise("nes+noise", nes_to_flag(m, x, y, o, queries, 0.04));

  // Benign replay: 10,000 distinct test images from one client.
  {
    detect::StatefulDetector d(o);
    const auto all = test.inputs().contiguous().reshape({test.size(), -1});
    int64_t hits = 0, first_flag = -1;
    double closest = 1;
    const auto t0 = std::chrono::steady_clock::now();
    for (int64_t i = 0; i < all.size(0); ++i) {
      const auto v = d.observe("replay", all[i].data_ptr<float>(), kImage, static_cast<double>(i) * 0.01);
      hits += v.hit;
      if (v.nearest >= 0) closest = std::min(closest, v.nearest);
      if (v.flagged && first_flag < 0) first_flag = i;
    }
    const double us = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count() /
                      static_cast<double>(all.size(0));
    std::printf("%-14s %lld hits in %lld distinct images; flagged at %lld (-1: never); closest pair %.4f; %.1f us/query "
                "against up to %lld stored\n",
                "benign", static_cast<long long>(hits), static_cast<long long>(all.size(0)), static_cast<long long>(first_flag),
                closest, us, static_cast<long long>(o.max_queries_per_client()));
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
        const auto v = d.observe("cam" + std::to_string(s), frame.data_ptr<float>(), kImage, k * 1.0);
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
