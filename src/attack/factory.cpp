#include "attack/factory.h"

#include <algorithm>
#include <sstream>

#include "attack/apgd.h"
#include "attack/fgsm.h"
#include "attack/pgd.h"
#include "attack/square.h"
#include "core/error.h"

namespace bulwark::attack {
namespace {

std::string joined(const std::vector<std::string>& v) {
  std::string out;
  for (const auto& s : v) out += (out.empty() ? "" : ", ") + s;
  return out;
}

std::vector<std::string> split_csv(const std::string& csv) {
  std::vector<std::string> out;
  std::stringstream in(csv);
  std::string item;
  while (std::getline(in, item, ',')) {
    item.erase(0, item.find_first_not_of(" \t"));
    item.erase(item.find_last_not_of(" \t") + 1);
    if (!item.empty()) out.push_back(item);
  }
  return out;
}

}  // namespace

const std::vector<std::string>& known_attacks() {
  static const std::vector<std::string> k = {"fgsm", "pgd", "apgd-ce", "apgd-dlr", "apgd-t", "square"};
  return k;
}

const std::vector<std::string>& auto_attacks() {
  static const std::vector<std::string> k = {"apgd-ce", "apgd-t", "square"};
  return k;
}

std::unique_ptr<Attack> make_attack(const std::string& name, double eps, const AttackSettings& s) {
  if (name == "fgsm") return std::make_unique<Fgsm>(FgsmOptions(eps).norm(s.norm).range(s.lo, s.hi).seed(s.seed).batch_size(s.batch_size));
  if (name == "pgd") {
    return std::make_unique<Pgd>(
        PgdOptions(eps).norm(s.norm).range(s.lo, s.hi).seed(s.seed).batch_size(s.batch_size).steps(s.pgd_steps).restarts(
            s.restarts));
  }
  if (name == "apgd-ce" || name == "apgd-dlr" || name == "apgd-t") {
    auto o = ApgdOptions(eps).norm(s.norm).range(s.lo, s.hi).seed(s.seed).batch_size(s.batch_size).steps(s.apgd_steps).restarts(
        s.restarts);
    if (name == "apgd-dlr") o.loss(Loss::kDlr);
    if (name == "apgd-t") o.targeted(true).target_classes(s.target_classes);
    return std::make_unique<Apgd>(o);
  }
  if (name == "square") {
    return std::make_unique<Square>(
        SquareOptions(eps).norm(s.norm).range(s.lo, s.hi).seed(s.seed).batch_size(s.batch_size).queries(s.square_queries).restarts(
            s.restarts));
  }
  throw invalid_argument("--attacks: unknown attack '" + name + "' (known: " + joined(known_attacks()) + ", auto)");
}

std::vector<std::string> parse_attack_list(const std::string& csv) {
  const auto names = split_csv(csv);
  if (names.empty()) throw invalid_argument("--attacks is empty (known: " + joined(known_attacks()) + ", auto)");
  if (names.size() == 1 && names[0] == "auto") return auto_attacks();
  for (const auto& n : names) {
    if (std::find(known_attacks().begin(), known_attacks().end(), n) == known_attacks().end()) {
      throw invalid_argument("--attacks: unknown attack '" + n + "' (known: " + joined(known_attacks()) +
                             ", or auto alone)");
    }
  }
  return names;
}

std::vector<double> parse_eps_list(const std::string& csv) {
  const auto items = split_csv(csv);
  if (items.empty()) throw invalid_argument("--eps is empty");
  std::vector<double> out;
  for (const auto& s : items) {
    size_t used = 0;
    double v = 0;
    try {
      v = std::stod(s, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != s.size()) throw invalid_argument("--eps: '" + s + "' is not a number");
    if (!(v >= 0) || !std::isfinite(v)) throw invalid_argument("--eps must be >= 0, got " + s);
    out.push_back(v);
  }
  return out;
}

}  // namespace bulwark::attack
