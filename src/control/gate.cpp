#include "control/gate.h"

#include <torch/torch.h>

#include <chrono>
#include <cstdio>

#include "attack/attack.h"
#include "core/error.h"
#include "data/dataset.h"
#include "model/model.h"

namespace bulwark::control {
namespace {

std::string pct(double x) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f%%", 100 * x);
  return buf;
}

GateSide evaluate_side(model::Model& m, const torch::Tensor& x, const torch::Tensor& y, const GatePolicy& gate,
                       uint64_t seed, const CancelFlag& cancel) {
  attack::SuiteOptions o;
  o.attacks = gate.attacks;
  o.eps = {gate.eps};
  o.settings.lo = m.spec().lo;
  o.settings.hi = m.spec().hi;
  o.settings.seed = seed;
  o.settings.pgd_steps = gate.pgd_steps;
  o.progress = false;
  o.cancel = cancel;
  m.set_training(false);
  model::FrozenParameters frozen(m);
  const auto report = attack::evaluate_robustness(attack::logits_of(m), x, y, o);
  GateSide side;
  side.clean = report.clean_accuracy;
  side.robust = report.worst.empty() ? report.clean_accuracy : report.worst.front().robust_accuracy;
  for (const auto& row : report.rows) side.robust = std::min(side.robust, row.robust_accuracy);
  side.warnings = report.warnings;
  side.report = report.to_json();
  return side;
}

std::string attack_names(const GatePolicy& gate) {
  std::string s;
  for (const auto& a : gate.attacks) s += (s.empty() ? "" : "+") + a;
  return s;
}

}  // namespace

nlohmann::json GateResult::to_json() const {
  const auto side = [](const GateSide& s) {
    return nlohmann::json{{"clean", s.clean}, {"robust", s.robust}, {"warnings", s.warnings}};
  };
  nlohmann::json j{{"passed", passed}, {"reason", reason}, {"candidate", side(candidate)}, {"production", side(production)},
                   {"seconds", seconds}};
  if (first_clean >= 0) j["first"] = {{"version", first_version}, {"clean", first_clean}};
  return j;
}

GateResult run_gate(model::Model& candidate, model::Model& production, const data::Dataset& test,
                    const GatePolicy& gate, uint64_t seed, model::Model* first, int64_t first_version,
                    const CancelFlag& cancel) {
  if (gate.offset + gate.n > test.size()) {
    throw invalid_argument("policy.gate: offset + n = " + std::to_string(gate.offset + gate.n) + " exceeds the " +
                           std::to_string(test.size()) + " test images");
  }
  const auto t0 = std::chrono::steady_clock::now();
  const auto d = test.select(torch::arange(gate.offset, gate.offset + gate.n));
  const auto x = d.inputs(), y = d.targets();
  GateResult r;
  r.production = evaluate_side(production, x, y, gate, seed, cancel);
  r.candidate = evaluate_side(candidate, x, y, gate, seed, cancel);
  if (first) {
    first->set_training(false);
    torch::NoGradGuard no_grad;
    r.first_version = first_version;
    int64_t correct = 0;
    for (int64_t i = 0; i < x.size(0); i += 128) {  // chunks: activations of large inputs stay bounded
      const auto end = std::min<int64_t>(x.size(0), i + 128);
      correct += first->logits(x.slice(0, i, end)).argmax(1).eq(y.slice(0, i, end)).sum().item<int64_t>();
    }
    r.first_clean = static_cast<double>(correct) / static_cast<double>(x.size(0));
  }
  const std::string where = attack_names(gate) + " at eps " + std::to_string(gate.eps).substr(0, 5);
  if (!r.candidate.warnings.empty()) {
    r.reason = "the candidate's evaluation warns of gradient masking, so its robust accuracy cannot be trusted: " +
               r.candidate.warnings.front();
  } else if (r.candidate.clean < r.production.clean - gate.max_clean_drop) {
    r.reason = "clean accuracy " + pct(r.candidate.clean) + " is more than " + pct(gate.max_clean_drop) +
               " below production's " + pct(r.production.clean) + " (gate.max_clean_drop)";
  } else if (r.first_clean >= 0 && r.candidate.clean < r.first_clean - gate.max_clean_drop_from_first) {
    r.reason = "clean accuracy " + pct(r.candidate.clean) + " is more than " + pct(gate.max_clean_drop_from_first) +
               " below the first version's (" + std::to_string(first_version) + ") " + pct(r.first_clean) +
               " (gate.max_clean_drop_from_first)";
  } else if (r.candidate.robust < gate.min_robust_accuracy) {
    r.reason = "robust accuracy " + pct(r.candidate.robust) + " under " + where + " is below " +
               pct(gate.min_robust_accuracy) + " (gate.min_robust_accuracy)";
  } else {
    r.passed = true;
    r.reason = "passed: clean " + pct(r.candidate.clean) + " (production " + pct(r.production.clean) + "), robust " +
               pct(r.candidate.robust) + " under " + where + " (production " + pct(r.production.robust) + ")";
  }
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

}  // namespace bulwark::control
