// bulwark deploy render — deploy/'s Kubernetes templates filled in, for `kubectl apply -f -`.
#include <cstdlib>
#include <filesystem>
#include <iostream>

#include "cli/common.h"
#include "control/manifest.h"
#include "core/error.h"
#include "core/files.h"

extern char** environ;

namespace bulwark::cli {
namespace {

namespace fs = std::filesystem;

struct RenderFlags {
  std::vector<std::string> files;
  std::vector<std::string> sets;
  std::string variables;
  std::string image_digest;
  bool env = false;
  bool samples = false;
};

// The templates' variables file: --variables, else the nearest variables.yaml in the first
// template's directory or one of its three parents (deploy/variables.yaml for deploy/kserve/x.yaml;
// /usr/share/bulwark/deploy/ in the image). None found is an error naming the flag.
std::string variables_file(const RenderFlags& f) {
  if (!f.variables.empty()) return f.variables;
  fs::path dir = fs::absolute(f.files.front()).parent_path();
  for (int up = 0; up < 4 && !dir.empty(); ++up, dir = dir.parent_path()) {
    if (fs::is_regular_file(dir / "variables.yaml")) return (dir / "variables.yaml").string();
    if (dir == dir.root_path()) break;
  }
  throw invalid_argument("no variables.yaml in " + fs::path(f.files.front()).parent_path().string() +
                         " or the three folders above it: give --variables FILE (deploy/variables.yaml)");
}

// --image-digest: a digest, or a file holding one (make image writes build/image/digest).
std::string digest_argument(const std::string& arg) {
  if (arg.rfind("sha256:", 0) == 0) return arg;
  if (!fs::is_regular_file(arg)) {
    throw invalid_argument("--image-digest " + arg + ": neither sha256:<hex> nor a file holding one");
  }
  std::string text = read_file(arg);
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  return text;
}

void run_render(const RenderFlags& f) {
  const std::string vars = variables_file(f);
  const auto declared = control::load_template_variables(vars);
  control::TemplateValues given;
  if (f.env) {
    for (char** e = environ; *e; ++e) {
      const std::string kv = *e;
      const auto eq = kv.find('=');
      if (eq != std::string::npos && declared.count(kv.substr(0, eq))) given[kv.substr(0, eq)] = kv.substr(eq + 1);
    }
  }
  for (const auto& s : f.sets) {
    const auto eq = s.find('=');
    if (eq == std::string::npos || eq == 0) throw invalid_argument("--set " + s + ": expected NAME=VALUE");
    given[s.substr(0, eq)] = s.substr(eq + 1);
  }
  if (!f.image_digest.empty()) {
    std::string image;
    if (given.count("IMAGE")) {
      image = given.at("IMAGE");
    } else if (declared.count("IMAGE") && declared.at("IMAGE").default_value) {
      image = *declared.at("IMAGE").default_value;
    } else {
      throw invalid_argument("--image-digest: " + vars + " gives IMAGE no default: add --set IMAGE=registry/repo");
    }
    given["IMAGE"] = control::pin_image_digest(image, digest_argument(f.image_digest));
  }
  std::cout << control::render_manifests(vars, f.files, given, f.samples);
}

}  // namespace

void register_deploy(CLI::App& app, GlobalOptions& g) {
  auto* deploy = app.add_subcommand("deploy", "Kubernetes manifests: render deploy/'s templates (docs/kubernetes.md)");
  deploy->require_subcommand(1);
  auto f = std::make_shared<RenderFlags>();
  auto* render = deploy->add_subcommand(
      "render", "Fill the ${VAR} placeholders of the templates and print them, joined by ---, for kubectl apply -f -");
  render->add_option("files", f->files, "Templates (deploy/kserve/*.yaml, deploy/base/*.yaml, ...)")->required()->check(CLI::ExistingFile);
  render->add_option("--set", f->sets, "NAME=VALUE (repeatable); wins over --env and the defaults")
      ->allow_extra_args(false);  // one value per --set: the templates follow
  render->add_flag("--env", f->env, "Take values from environment variables of the declared names");
  render->add_option("--variables", f->variables,
                     "The variables file (default: the nearest variables.yaml at or above the first template)");
  render->add_option("--image-digest", f->image_digest,
                     "Pin IMAGE to this digest (sha256:..., or a file holding it, e.g. build/image/digest): repo@sha256:...");
  render->add_flag("--samples", f->samples, "Required variables without a value take their sample (a dry run; tests)");
  render->callback([f] { run_render(*f); });
}

}  // namespace bulwark::cli
