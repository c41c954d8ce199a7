// control/manifest.h — fills the ${VAR} placeholders of deploy/'s Kubernetes templates: the one
// renderer, used by `bulwark deploy render` (what a user pipes to kubectl) and by the guard's
// Kubernetes mode (kubernetes.h). The values given win, then the defaults of variables.yaml (which
// may name other variables); `$${` writes a literal `${`; an undeclared placeholder, an undeclared
// given name or a required variable without a value is an error, and nothing is rendered
// half-filled.
//
// Hand-written because no packaged library renders these templates (they are not Helm charts or
// envsubst files: the defaults and the required/sample split live in variables.yaml). Until
// issue 33 it had a Python twin (deploy/render.py); tests/control/kubernetes_test.cpp keeps that
// script's outputs on escapes and errors as the expected ones.
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

// variables.yaml, checked (names, descriptions, exactly one of default or sample); throws invalid_argument.
TemplateVariables load_template_variables(const std::string& path);

// The names ${NAME} in `text` (escaped $${...} excluded).
std::set<std::string> template_placeholders(const std::string& text);

// `text` with every placeholder replaced; `where` names the source in errors.
std::string substitute_placeholders(const std::string& text, const TemplateValues& values, const std::string& where);

// The value of each variable in `needed` (all when null): `given`, else the default (placeholders
// in either are filled in first), else the sample when `use_samples`, else an error.
TemplateValues resolve_template_values(const TemplateVariables& variables, const TemplateValues& given,
                                       bool use_samples = false, const std::set<std::string>* needed = nullptr);

// What `bulwark deploy render --set NAME=VALUE... FILE...` prints (with the variables file given
// here): each file filled in, stripped of leading and trailing newlines, joined by "\n---\n", plus
// "\n". `use_samples`: required variables without a value take their sample (tests, dry runs).
std::string render_manifests(const std::string& variables_file, const std::vector<std::string>& files,
                             const TemplateValues& given, bool use_samples = false);

// `image` (registry/repo[:tag][@digest]) pinned to `digest` (sha256:<64 hex>): registry/repo@digest,
// so what a cluster pulls is the image that was tested. Throws invalid_argument on a malformed digest
// or an image reference without a repository.
std::string pin_image_digest(const std::string& image, const std::string& digest);

}  // namespace bulwark::control
