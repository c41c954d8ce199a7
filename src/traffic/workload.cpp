#include "traffic/workload.h"

#include <torch/torch.h>

#include <chrono>
#include <cstdio>
#include <map>

#include "attack/fgsm.h"
#include "attack/pgd.h"
#include "core/error.h"
#include "core/progress.h"
#include "data/dataset.h"
#include "model/model.h"

namespace bulwark::traffic {
namespace {

double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

std::unique_ptr<attack::Attack> transfer_attack(const Phase& p, const model::Model& m, const TrafficOptions& o) {
  const double lo = m.spec().lo, hi = m.spec().hi;
  if (p.kind == PhaseKind::kFgsm) {
    return std::make_unique<attack::Fgsm>(
        attack::FgsmOptions(p.eps_linf).range(lo, hi).seed(o.seed).batch_size(o.craft_batch));
  }
  if (p.kind == PhaseKind::kPgd) {
    return std::make_unique<attack::Pgd>(attack::PgdOptions(p.eps_linf)
                                             .range(lo, hi)
                                             .seed(o.seed)
                                             .batch_size(o.craft_batch)
                                             .steps(o.pgd_steps)
                                             .early_stop(false));
  }
  throw internal_error("transfer_attack: phase " + to_string(p.kind) + " is not a transfer phase");
}

}  // namespace

torch::Tensor craft_transfer(const Phase& p, model::Model& m, const torch::Tensor& x, const torch::Tensor& y,
                             const TrafficOptions& o) {
  auto a = transfer_attack(p, m, o);
  char label[96];
  std::snprintf(label, sizeof label, "craft %s eps %g", to_string(p.kind).c_str(), p.eps_linf);
  ProgressBar bar(label, 1000, o.progress);
  a->on_progress([&bar](double f) { bar.update(static_cast<int64_t>(f * 1000)); });
  model::FrozenParameters frozen(m);
  m.set_training(false);
  auto adv = a->perturb(attack::logits_of(m), x, y).detach().contiguous();
  bar.finish();
  return adv;
}

Workload prepare_workload(const TrafficOptions& o) {
  o.validate();
  Workload w;
  std::map<std::string, model::Model> models;  // attacker models by path, loaded once
  for (const auto& p : o.phases) {
    if (p.transfer() && !models.count(p.attacker_model)) {
      models.emplace(p.attacker_model, model::Model::load(p.attacker_model));
    }
  }
  data::LoadOptions load;
  load.shape = o.input_shape;
  // Without --input-shape, a transfer phase's local model says the served shape (it must take the
  // same images); image folders are converted to it.
  if (load.shape.empty() && !models.empty()) load.shape = models.begin()->second.spec().input_shape;
  const auto d = data::load_dataset(o.data, data::Split::kTest, load);
  if (o.offset + o.n > d.size()) {
    throw invalid_argument("--offset " + std::to_string(o.offset) + " + --n " + std::to_string(o.n) + " exceeds the " +
                           std::to_string(d.size()) + " test images of " + d.name);
  }
  const auto rows = torch::arange(o.offset, o.offset + o.n, torch::kInt64);
  w.dataset = d.name;
  w.x = d.inputs(rows).contiguous();
  w.y = d.targets(rows).contiguous();
  const auto perm = data::seeded_permutation(o.n, o.seed);
  w.order.assign(perm.data_ptr<int64_t>(), perm.data_ptr<int64_t>() + o.n);

  std::map<std::string, size_t> crafted;       // "kind eps path" -> the plan that holds it
  for (const auto& p : o.phases) {
    PhasePlan plan;
    plan.phase = p;
    const auto start = std::chrono::steady_clock::now();
    if (p.transfer()) {
      auto it = models.find(p.attacker_model);
      it->second.check_input(w.x.narrow(0, 0, 1));
      char key[64];
      std::snprintf(key, sizeof key, "%s %.17g ", to_string(p.kind).c_str(), p.eps_linf);
      const auto same = crafted.find(key + p.attacker_model);
      if (same != crafted.end()) {
        plan.adversarial = w.plans[same->second].adversarial;
        plan.local_fooled = w.plans[same->second].local_fooled;
      } else {
        plan.adversarial = craft_transfer(p, it->second, w.x, w.y, o);
        torch::NoGradGuard no_grad;
        const auto pred = it->second.predict_logits(plan.adversarial).argmax(1);
        plan.local_fooled = pred.ne(w.y).to(torch::kFloat64).mean().item<double>();
        plan.craft_seconds = seconds_since(start);
        crafted[key + p.attacker_model] = w.plans.size();
        std::fprintf(stderr, "crafted %lld %s adversarials (eps %g%s) against %s in %s; they fool it on %.1f%%\n",
                     static_cast<long long>(o.n), to_string(p.kind).c_str(), p.eps_linf,
                     p.kind == PhaseKind::kPgd ? (", " + std::to_string(o.pgd_steps) + " steps").c_str() : "",
                     p.attacker_model.c_str(), format_duration(plan.craft_seconds).c_str(), 100.0 * plan.local_fooled);
      }
    } else if (p.kind == PhaseKind::kSquare) {
      SquareAttackerOptions so;
      so.eps_linf = p.eps_linf;
      so.queries_per_image = o.square_queries;
      so.seed = o.seed;
      plan.square = std::make_unique<SquareAttacker>(o.client, w.x, w.y, w.order, so);
      plan.square->warm_up();
      plan.craft_seconds = seconds_since(start);
      const auto c = plan.square->counts();
      std::fprintf(stderr, "square warm-up: %lld adversarials (eps %g) from %lld queries to the endpoint in %s\n",
                   static_cast<long long>(c.crafted), p.eps_linf, static_cast<long long>(c.queries),
                   format_duration(plan.craft_seconds).c_str());
    }
    w.plans.push_back(std::move(plan));
  }
  return w;
}

}  // namespace bulwark::traffic
