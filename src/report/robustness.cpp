#include "report/robustness.h"

#include <algorithm>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "report/detail/fields.h"
#include "report/detail/text_input.h"

namespace bulwark::report {
namespace {

using detail::FieldReader;
using nlohmann::json;

double accuracy_field(const FieldReader& f, const char* key) {
  const double a = f.number(key);
  if (a < 0 || a > 1) throw f.error(key, "must be in [0, 1], got " + detail::shown(a));
  return a;
}

RobustnessPoint parse_point(const FieldReader& f) {
  RobustnessPoint p;
  p.eps = f.number("eps");
  if (p.eps < 0) throw f.error("eps", "must be >= 0, got " + detail::shown(p.eps));
  p.accuracy = accuracy_field(f, "robust_accuracy");
  return p;
}

// Adds `p` to `curve`, keeping eps increasing; a second row for the same eps is an error.
void add_point(RobustnessCurve& curve, const RobustnessPoint& p, const FieldReader& f) {
  auto at = std::lower_bound(curve.points.begin(), curve.points.end(), p.eps,
                             [](const RobustnessPoint& q, double eps) { return q.eps < eps; });
  if (at != curve.points.end() && at->eps == p.eps) {
    throw f.error("eps", "repeats eps " + detail::shown(p.eps) + " for attack '" + curve.attack + "'");
  }
  curve.points.insert(at, p);
}

const json& required_array(const FieldReader& f, const char* key, bool required) {
  static const json kEmpty = json::array();
  const json* v = f.find(key);
  if (v == nullptr && !required) return kEmpty;
  if (v == nullptr) throw f.error(key, "is missing");
  if (!v->is_array()) throw f.error(key, "must be an array, got " + detail::shown(*v));
  if (required && v->empty()) throw f.error(key, "must not be empty");
  return *v;
}

void read_results(const json& rows, const std::string& path, RobustnessResult& r) {
  for (size_t i = 0; i < rows.size(); ++i) {
    const FieldReader row(rows[i], path, "results[" + std::to_string(i) + "].");
    const std::string attack = row.non_empty_string("attack");
    auto curve = std::find_if(r.curves.begin(), r.curves.end(), [&](const auto& c) { return c.attack == attack; });
    if (curve == r.curves.end()) curve = r.curves.insert(r.curves.end(), RobustnessCurve{attack, {}});
    add_point(*curve, parse_point(row), row);
  }
}

}  // namespace

RobustnessResult load_robustness(const std::string& label, const std::string& path) {
  const std::string text = detail::read_input_file(path, "robustness file");
  json j;
  try {
    j = json::parse(text);
  } catch (const json::parse_error& e) {
    throw data_format(path + ": not valid JSON (" + e.what() + "); expected the output of `bulwark --json attack`");
  }
  const FieldReader f(j, path);
  RobustnessResult r;
  r.label = label;
  r.path = path;
  r.model = f.string("model", false);
  r.dataset = f.string("dataset", false);
  r.norm = f.non_empty_string("norm");
  r.n = f.count("n");
  if (r.n == 0) throw f.error("n", "must be > 0");
  r.clean_accuracy = accuracy_field(f, "clean_accuracy");
  read_results(required_array(f, "results", true), path, r);
  r.worst_case.attack = "worst case";
  const json& worst = required_array(f, "worst_case", false);
  for (size_t i = 0; i < worst.size(); ++i) {
    const FieldReader row(worst[i], path, "worst_case[" + std::to_string(i) + "].");
    add_point(r.worst_case, parse_point(row), row);
  }
  return r;
}

}  // namespace bulwark::report
