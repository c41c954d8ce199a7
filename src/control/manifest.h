// control/manifest.h — fills the ${VAR} placeholders of deploy/'s Kubernetes templates, for the
// guard's Kubernetes mode (kubernetes.h), with deploy/render.py's exact semantics: the values
// given win, then the defaults of variables.yaml (which may name other variables); `$${` writes a
// literal `${`; an undeclared placeholder, an undeclared given name or a required variable without
// a value is an error with render.py's message, and nothing is rendered half-filled.
//
// Hand-written because no packaged library renders these templates (they are not Helm charts or
// envsubst files: the defaults and the required/sample split live in variables.yaml). It mirrors
// deploy/render.py line for line; tests/control/kubernetes_test.cpp compares the two byte for byte
// on every template in deploy/. Change both together.
#pragma once

#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace bulwark::control {

// One declared variable: a default (optional variable) or a sample (required; tests only).
struct TemplateVariable {
  std::optional<std::string> default_value;
  std::optional<std::string> sample;
  std::string description;
};
using TemplateVariables = std::map<std::string, TemplateVariable>;
using TemplateValues = std::map<std::string, std::string>;

// variables.yaml, checked as render.py's load_variables() checks it; throws invalid_argument.
TemplateVariables load_template_variables(const std::string& path);

// The names ${NAME} in `text` (escaped $${...} excluded).
std::set<std::string> template_placeholders(const std::string& text);

// `text` with every placeholder replaced; `where` names the source in errors.
std::string substitute_placeholders(const std::string& text, const TemplateValues& values, const std::string& where);

// The value of each variable in `needed` (all when null): `given`, else the default (placeholders
// in either are filled in first), else the sample when `use_samples`, else an error.
TemplateValues resolve_template_values(const TemplateVariables& variables, const TemplateValues& given,
                                       bool use_samples = false, const std::set<std::string>* needed = nullptr);

// What `render.py --set NAME=VALUE... FILE...` prints (with the variables file given here): each
// file filled in, stripped of leading and trailing newlines, joined by "\n---\n", plus "\n".
std::string render_manifests(const std::string& variables_file, const std::vector<std::string>& files,
                             const TemplateValues& given);

}  // namespace bulwark::control
