#include "detect/evaluate.h"

#include <torch/torch.h>

#include <chrono>

#include "attack/base.h"
#include "core/error.h"
#include "core/progress.h"
#include "model/model.h"

namespace bulwark::detect {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// Rows for every detector column and the combined score of one set of positives.
void add_rows(std::vector<DetectionRow>& rows, DetectionRow base, const DetectorSet& set, const Scores& clean,
              const Scores& adv, const torch::Tensor& clean_correct) {
  const auto n = clean.raw.size(0);
  const auto score_rows = [&](const std::string& name, const torch::Tensor& neg, const torch::Tensor& pos,
                              const torch::Tensor& neg_flag, const torch::Tensor& pos_flag) {
    DetectionRow r = base;
    r.detector = name;
    r.negatives = n;
    r.positives = pos.numel();
    if (pos.numel() > 0) {
      r.auroc = auroc(neg, pos);
      r.tpr_at_1 = tpr_at_fpr(neg, pos, 0.01);
      r.tpr_at_5 = tpr_at_fpr(neg, pos, 0.05);
      r.tpr_at_threshold = pos_flag.to(torch::kDouble).mean().item<double>();
    }
    r.fpr_at_threshold = neg_flag.to(torch::kDouble).mean().item<double>();
    r.clean_accuracy_lost = (neg_flag & clean_correct).to(torch::kDouble).sum().item<double>() / std::max<int64_t>(1, n);
    rows.push_back(r);
  };
  const auto& th = set.thresholds();
  for (size_t d = 0; d < set.detectors().size(); ++d) {
    const auto c = static_cast<int64_t>(d);
    const auto neg = clean.raw.select(1, c), pos = adv.raw.select(1, c);
    score_rows(set.detectors()[d]->name(), neg, pos, neg > th[d], pos > th[d]);
  }
  if (set.detectors().size() > 1) score_rows("combined", clean.combined, adv.combined, clean.flagged, adv.flagged);
}

Scores score_points(const DetectorSet& set, const model::Model& m, const torch::Tensor& x) {
  return set.from_raw(score_all(set, m, x));
}

}  // namespace

void EvaluateOptions::validate() const {
  if (attacks.empty() && !adaptive) throw invalid_argument("--attacks is empty and --no-adaptive is set: nothing to run");
  if (eps.empty()) throw invalid_argument("--eps is empty");
  if (adaptive_steps < 1 || adaptive_steps > 10000) throw invalid_argument("--adaptive-steps must be in 1..10000");
  if (!(adaptive_weight >= 0 && adaptive_weight <= 1e6)) throw invalid_argument("--adaptive-weight must be in [0, 1e6]");
}

double auroc(const torch::Tensor& negatives, const torch::Tensor& positives) {
  const int64_t nn = negatives.numel(), np = positives.numel();
  if (nn == 0 || np == 0) return 0.5;
  // Mann-Whitney U with midranks for ties.
  const auto all = torch::cat({negatives.flatten(), positives.flatten()}).to(torch::kDouble);
  const auto sorted = all.sort();
  const auto vals = std::get<0>(sorted).contiguous();
  const auto order = std::get<1>(sorted).contiguous();
  const double* v = vals.data_ptr<double>();
  const int64_t* o = order.data_ptr<int64_t>();
  const int64_t total = nn + np;
  double rank_sum_pos = 0;
  for (int64_t i = 0; i < total;) {
    int64_t j = i;
    while (j + 1 < total && v[j + 1] == v[i]) ++j;
    const double mid = 0.5 * (i + j) + 1;
    for (int64_t k = i; k <= j; ++k) {
      if (o[k] >= nn) rank_sum_pos += mid;
    }
    i = j + 1;
  }
  const double u = rank_sum_pos - static_cast<double>(np) * (np + 1) / 2;
  return u / (static_cast<double>(nn) * np);
}

double tpr_at_fpr(const torch::Tensor& negatives, const torch::Tensor& positives, double fpr) {
  if (positives.numel() == 0 || negatives.numel() == 0) return 0;
  const double t = upper_quantile(negatives, fpr);
  return (positives.to(torch::kDouble) > t).to(torch::kDouble).mean().item<double>();
}

torch::Tensor adaptive_attack(const model::Model& m, const DetectorSet& target, const torch::Tensor& x,
                              const torch::Tensor& y, double eps, const EvaluateOptions& o) {
  if (!target.calibrated()) throw invalid_argument("the adaptive attack needs a calibrated detector set");
  attack::Threat t;
  t.eps = eps;
  t.lo = m.spec().lo;
  t.hi = m.spec().hi;
  t.validate();
  // Two phases per point, as Carlini & Wagner's detector attacks: while the point is still
  // classified correctly it climbs the margin with PGD's step (eps/4); once misclassified it
  // descends the detector scores with a finer step (eps/10) while the clamped margin keeps it
  // misclassified. So it stops where PGD would when that point is already unflagged.
  const double alpha_climb = eps / 4, alpha_evade = eps / 10;
  const double kappa = 1.0;  // logit margin past which only evasion matters
  std::vector<double> th = target.thresholds();
  const auto thr = torch::tensor(std::vector<float>(th.begin(), th.end())).clamp_min(1e-6).unsqueeze(0);
  const bool feats = target.needs_features();
  const int64_t chunk = o.settings.batch_size;
  std::vector<torch::Tensor> out;
  for (int64_t s = 0; s < x.size(0); s += chunk) {
    const int64_t len = std::min(chunk, x.size(0) - s);
    const auto xc = x.narrow(0, s, len), yc = y.narrow(0, s, len);
    auto cur = xc.clone();
    auto best = xc.clone();
    auto best_score = torch::full({len}, 2.0);  // combined score of `best` when misclassified
    auto done = torch::zeros({len}, torch::kBool);
    for (int64_t step = 0; step <= o.adaptive_steps; ++step) {
      torch::AutoGradMode grad_on(true);
      auto xr = cur.detach().requires_grad_(true);
      Batch b;
      b.x = xr;
      if (feats) std::tie(b.logits, b.features) = m.logits_and_features(xr);
      else b.logits = m.logits(xr);
      const auto sc = target.score(m, b);
      {
        // Keep, per point, the iterate that is misclassified with the lowest combined score;
        // an unflagged one ends the search for that point.
        torch::NoGradGuard ng;
        const auto wrong = b.logits.argmax(1).ne(yc) & done.logical_not();
        const auto better = wrong & (sc.combined < best_score);
        best.index_put_({better}, cur.index({better}));
        best_score = torch::where(better, sc.combined, best_score);
        done |= wrong & sc.flagged.logical_not();
      }
      if (step == o.adaptive_steps || done.all().item<bool>()) break;
      const auto z_y = b.logits.gather(1, yc.unsqueeze(1)).squeeze(1);
      const auto others = b.logits.scatter(1, yc.unsqueeze(1), -1e9);
      const auto margin = others.amax(1) - z_y;
      const auto wrong = margin.detach() > 0;
      const auto evade = (sc.raw / thr - 0.5).clamp_min(0).sum(1);
      const auto objective = margin.clamp_max(kappa) - o.adaptive_weight * wrong.to(torch::kFloat) * evade;
      const auto g = torch::autograd::grad({objective.sum()}, {xr})[0];
      torch::NoGradGuard ng;
      const auto step_dir = t.norm == attack::Norm::kLinf ? g.sign() : attack::l2_normalize(g);
      const auto alpha = torch::where(wrong, torch::full({len}, alpha_evade), torch::full({len}, alpha_climb));
      // Points already done stay where they are.
      const auto keep = done.view({len, 1, 1, 1});
      cur = torch::where(keep, cur, t.project(cur + alpha.view({len, 1, 1, 1}) * step_dir, xc));
    }
    out.push_back(best);
  }
  return out.empty() ? x.clone() : torch::cat(out);
}

DetectionReport evaluate_detection(model::Model& m, const DetectorSet& set, const torch::Tensor& x,
                                   const torch::Tensor& y, const EvaluateOptions& o) {
  o.validate();
  const auto t0 = Clock::now();
  m.set_training(false);
  model::FrozenParameters frozen(m);
  DetectionReport rep;
  rep.n = x.size(0);
  rep.fpr_target = set.fpr();
  rep.detectors = set.names();
  const auto f = attack::logits_of(m);
  const auto pred = attack::forward_chunked(f, x, o.settings.batch_size).argmax(1);
  const auto correct = pred.eq(y);
  rep.clean_accuracy = correct.to(torch::kDouble).mean().item<double>();
  const auto clean = score_points(set, m, x);
  const auto idx = correct.nonzero().squeeze(1);
  const auto xs = x.index_select(0, idx), ys = y.index_select(0, idx);
  for (const double eps : o.eps) {
    for (const auto& name : o.attacks) {
      const auto t1 = Clock::now();
      auto a = attack::make_attack(name, eps, o.settings);
      ProgressBar bar("detect " + name + " eps=" + std::to_string(eps).substr(0, 5), 1000, o.progress);
      a->on_progress([&bar](double fr) { bar.update(static_cast<int64_t>(1000 * fr)); });
      const auto adv = xs.size(0) ? a->perturb(f, xs, ys) : xs;
      bar.finish();
      const auto fooled = attack::forward_chunked(f, adv, o.settings.batch_size).argmax(1).ne(ys);
      const auto pos = adv.index({fooled});
      DetectionRow base;
      base.attack = name;
      base.eps = eps;
      const size_t first = rep.rows.size();
      add_rows(rep.rows, base, set, clean, score_points(set, m, pos), correct);
      for (size_t i = first; i < rep.rows.size(); ++i) rep.rows[i].seconds = seconds_since(t1);
    }
    if (!o.adaptive || !set.calibrated() || xs.size(0) == 0) continue;
    // One adaptive attacker per target: each detector alone, then all of them (the combined flag).
    std::vector<std::string> targets = set.names();
    if (targets.size() > 1) targets.push_back("combined");
    for (const auto& target_name : targets) {
      const auto t1 = Clock::now();
      const auto target = target_name == "combined" ? set : set.select({target_name});
      ProgressBar bar("detect adaptive->" + target_name, 1, o.progress);
      const auto adv = adaptive_attack(m, target, xs, ys, eps, o);
      bar.finish();
      const auto fooled = attack::forward_chunked(f, adv, o.settings.batch_size).argmax(1).ne(ys);
      const auto pos = adv.index({fooled});
      const auto tclean = score_points(target, m, x);
      const auto tadv = score_points(target, m, pos);
      DetectionRow r;
      r.attack = "adaptive";
      r.target = target_name;
      r.eps = eps;
      std::vector<DetectionRow> tmp;
      add_rows(tmp, r, target, tclean, tadv, correct);
      auto row = target_name == "combined" ? tmp.back() : tmp.front();
      row.detector = target_name;
      row.evasion = (tadv.flagged.logical_not()).to(torch::kDouble).sum().item<double>() / xs.size(0);
      row.seconds = seconds_since(t1);
      rep.rows.push_back(row);
    }
  }
  rep.seconds = seconds_since(t0);
  return rep;
}

nlohmann::json DetectionRow::to_json() const {
  nlohmann::json j{{"detector", detector},
                   {"attack", attack},
                   {"eps", eps},
                   {"negatives", negatives},
                   {"positives", positives},
                   {"auroc", auroc},
                   {"tpr_at_1pct_fpr", tpr_at_1},
                   {"tpr_at_5pct_fpr", tpr_at_5},
                   {"tpr_at_threshold", tpr_at_threshold},
                   {"fpr_at_threshold", fpr_at_threshold},
                   {"clean_accuracy_lost", clean_accuracy_lost},
                   {"seconds", seconds}};
  if (!target.empty()) j["target"] = target;
  if (evasion >= 0) j["evasion"] = evasion;
  return j;
}

nlohmann::json DetectionReport::to_json() const {
  nlohmann::json r = nlohmann::json::array();
  for (const auto& row : rows) r.push_back(row.to_json());
  return {{"n", n},           {"clean_accuracy", clean_accuracy}, {"fpr_target", fpr_target},
          {"detectors", detectors}, {"rows", r},                      {"seconds", seconds}};
}

}  // namespace bulwark::detect
