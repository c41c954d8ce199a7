// traffic/phases.h — the timeline a traffic run follows: phases of benign or attacked traffic,
// parsed from `--phase KIND:SECONDS[:EPS[:MODEL]]` and validated before anything is loaded.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace bulwark::traffic {

enum class PhaseKind {
  kBenign,  // clean test images only
  kFgsm,    // transfer: FGSM crafted against a local model, then sent
  kPgd,     // transfer: PGD crafted against a local model, then sent
  kSquare,  // query-based black-box: Square Attack against the live endpoint
};

std::string to_string(PhaseKind k);
// "benign" | "fgsm" | "pgd" | "square"; others throw invalid_argument naming --phase.
PhaseKind parse_phase_kind(const std::string& s);

constexpr int64_t kMaxPhaseSeconds = 86400;

struct Phase {
  PhaseKind kind = PhaseKind::kBenign;
  int64_t seconds = 0;         // whole seconds, so every wall-clock second belongs to one phase
  double eps_linf = 0.0;       // attack phases: the L∞ budget in (0, 1]
  std::string attacker_model;  // fgsm/pgd: the local model crafted against (from MODEL or --attacker-model)

  bool attacked() const { return kind != PhaseKind::kBenign; }
  // fgsm/pgd: crafted offline against a local copy, not against the endpoint.
  bool transfer() const { return kind == PhaseKind::kFgsm || kind == PhaseKind::kPgd; }
};

// Parses one `--phase` value. MODEL is everything after the third colon (paths may hold colons).
// Throws invalid_argument naming --phase: unknown kind, seconds not a whole number in
// [1, 86400], EPS missing for an attack or given for benign, EPS outside (0, 1], MODEL on a
// phase that does not craft locally.
Phase parse_phase(const std::string& spec);

// Every transfer phase without its own MODEL gets `default_attacker_model`; throws naming
// --attacker-model when one is needed and none was given, and naming --phase when `phases` is empty.
void resolve_attacker_models(std::vector<Phase>& phases, const std::string& default_attacker_model);

// The run's length in seconds (sum of the phases).
int64_t total_seconds(const std::vector<Phase>& phases);

}  // namespace bulwark::traffic
