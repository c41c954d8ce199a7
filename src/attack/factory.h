// attack/factory.h — attacks by name, as the CLI and the closed loop ask for them.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "attack/base.h"

namespace bulwark::attack {

// Knobs the CLI exposes; each attack takes the ones that apply to it.
struct AttackSettings {
  Norm norm = Norm::kLinf;
  double lo = 0.0, hi = 1.0;
  uint64_t seed = 0;
  int64_t pgd_steps = 20;
  int64_t apgd_steps = 100;
  int64_t restarts = 1;
  int64_t square_queries = 5000;
  int64_t target_classes = 9;
  // Points computed together: a memory bound, and a speed lever. With the CLI's malloc setting
  // (core/system.h) 256 ran the zoo `cnn`'s PGD-20 and APGD-CE in 0.80-0.85x the time of 128
  // (docs/BENCHMARKS.md); without it 128 had looked faster, from memory churn, not cache.
  int64_t batch_size = 256;
};

// fgsm, pgd, apgd-ce, apgd-dlr, apgd-t, square. Unknown names throw naming --attacks.
std::unique_ptr<Attack> make_attack(const std::string& name, double eps, const AttackSettings& s);

const std::vector<std::string>& known_attacks();
// The AutoAttack-style cascade `--attacks auto` expands to.
const std::vector<std::string>& auto_attacks();

// "fgsm,pgd" -> names (validated); "auto" -> auto_attacks().
std::vector<std::string> parse_attack_list(const std::string& csv);
// "0.05,0.1" -> values (each validated as --eps).
std::vector<double> parse_eps_list(const std::string& csv);

}  // namespace bulwark::attack
