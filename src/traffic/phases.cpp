#include "traffic/phases.h"

#include <cmath>
#include <cstdlib>

#include "core/error.h"

namespace bulwark::traffic {
namespace {

constexpr const char* kPhaseFormat = "KIND:SECONDS[:EPS[:MODEL]]";

Error phase_error(const std::string& spec, const std::string& why) {
  return invalid_argument("--phase '" + spec + "': " + why + " (format " + kPhaseFormat +
                          ", KIND one of benign, fgsm, pgd, square)");
}

// Splits on the first three colons; the fourth field keeps any further colons.
std::vector<std::string> split_fields(const std::string& spec) {
  std::vector<std::string> out;
  size_t start = 0;
  while (out.size() < 3) {
    const size_t colon = spec.find(':', start);
    if (colon == std::string::npos) break;
    out.push_back(spec.substr(start, colon - start));
    start = colon + 1;
  }
  out.push_back(spec.substr(start));
  return out;
}

bool parse_whole(const std::string& s, int64_t* out) {
  if (s.empty() || s.size() > 18) return false;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
  }
  *out = std::stoll(s);
  return true;
}

bool parse_number(const std::string& s, double* out) {
  if (s.empty()) return false;
  char* end = nullptr;
  *out = std::strtod(s.c_str(), &end);
  return end == s.c_str() + s.size() && std::isfinite(*out);
}

}  // namespace

std::string to_string(PhaseKind k) {
  switch (k) {
    case PhaseKind::kBenign:
      return "benign";
    case PhaseKind::kFgsm:
      return "fgsm";
    case PhaseKind::kPgd:
      return "pgd";
    case PhaseKind::kSquare:
      return "square";
  }
  return "?";
}

PhaseKind parse_phase_kind(const std::string& s) {
  for (auto k : {PhaseKind::kBenign, PhaseKind::kFgsm, PhaseKind::kPgd, PhaseKind::kSquare}) {
    if (s == to_string(k)) return k;
  }
  throw invalid_argument("--phase: unknown kind '" + s + "' (known: benign, fgsm, pgd, square)");
}

Phase parse_phase(const std::string& spec) {
  const auto f = split_fields(spec);
  if (f.size() < 2) throw phase_error(spec, "SECONDS is missing");
  Phase p;
  try {
    p.kind = parse_phase_kind(f[0]);
  } catch (const Error&) {
    throw phase_error(spec, "unknown kind '" + f[0] + "'");
  }
  if (!parse_whole(f[1], &p.seconds) || p.seconds < 1 || p.seconds > kMaxPhaseSeconds) {
    throw phase_error(
        spec, "SECONDS must be a whole number in [1, " + std::to_string(kMaxPhaseSeconds) + "], got '" + f[1] + "'");
  }
  if (!p.attacked()) {
    if (f.size() > 2) throw phase_error(spec, "a benign phase takes no EPS or MODEL");
    return p;
  }
  if (f.size() < 3 || f[2].empty()) throw phase_error(spec, "an attack phase needs EPS");
  if (!parse_number(f[2], &p.eps_linf) || !(p.eps_linf > 0 && p.eps_linf <= 1)) {
    throw phase_error(spec, "EPS must be a number in (0, 1], got '" + f[2] + "'");
  }
  if (f.size() > 3) {
    if (!p.transfer()) throw phase_error(spec, "square queries the live endpoint and takes no MODEL");
    if (f[3].empty()) throw phase_error(spec, "MODEL is empty");
    p.attacker_model = f[3];
  }
  return p;
}

void resolve_attacker_models(std::vector<Phase>& phases, const std::string& default_attacker_model) {
  if (phases.empty()) throw invalid_argument("--phase is required (at least one, e.g. --phase benign:20)");
  for (auto& p : phases) {
    if (!p.transfer() || !p.attacker_model.empty()) continue;
    if (default_attacker_model.empty()) {
      throw invalid_argument("--attacker-model is required: phase " + to_string(p.kind) +
                             " crafts its adversarials against a local model (or give MODEL in the --phase)");
    }
    p.attacker_model = default_attacker_model;
  }
}

int64_t total_seconds(const std::vector<Phase>& phases) {
  int64_t s = 0;
  for (const auto& p : phases) s += p.seconds;
  return s;
}

}  // namespace bulwark::traffic
