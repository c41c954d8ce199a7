// bulwark guard — the server plus the closed loop: `serve` as configured under `serve:` in
// guard.yaml, and the controller (control/controller.h) under `policy:` driving alarm → harden →
// gate → promote → watch → rollback for the one model served from the registry's production stage.
#include <yaml-cpp/yaml.h>

#include "cli/common.h"
#include "cli/serve_command.h"
#include "control/control.h"
#include "core/error.h"
#include "registry/store.h"
#include "serve/config.h"

namespace bulwark::cli {
namespace {

control::Policy load_policy(const std::string& path) {
  YAML::Node root;
  try {
    root = YAML::LoadFile(path);
  } catch (const YAML::BadFile&) {
    throw not_found("--config: cannot read " + path);
  } catch (const YAML::Exception& e) {
    throw data_format(path + ": not valid YAML: " + e.what());
  }
  if (!root.IsMap() || !root["policy"]) throw invalid_argument(path + ": needs a 'policy' section (see docs/loop.md)");
  for (const auto& kv : root) {
    const auto key = kv.first.as<std::string>();
    if (key != "policy" && key != "serve") throw invalid_argument(path + ": unknown top-level key '" + key + "' (serve, policy)");
  }
  return control::Policy::from_yaml(root["policy"], path + ": policy");
}

// The one model served by the registry's production stage: the controller's.
std::pair<std::string, registry::Reference> guarded_model(const ServeFlags& f) {
  std::vector<std::pair<std::string, registry::Reference>> found;
  for (const auto& m : f.models) {
    const auto [name, ref] = serve::parse_model_arg(m);
    if (!serve::is_registry_reference(ref)) continue;
    const auto r = registry::parse_reference(ref);
    if (r.version == 0 && r.stage == registry::Stage::kProduction) found.emplace_back(name, r);
  }
  if (found.size() != 1) {
    throw invalid_argument("guard: serve exactly one model as NAME=registry:MODEL@production (found " +
                           std::to_string(found.size()) + "); the loop promotes into that stage");
  }
  if (f.core.source.registry.empty()) throw invalid_argument("guard: serve.registry is required");
  return found.front();
}

}  // namespace

void register_guard(CLI::App& app, GlobalOptions& g) {
  auto f = std::make_shared<ServeFlags>();
  f->config_section = "serve";
  auto* cmd = app.add_subcommand(
      "guard", "Serve a registry model and run the closed loop: alarm, harden, gate, promote, watch, roll back");
  add_serve_options(cmd, *f);
  cmd->callback([cmd, f, &g] {
    if (f->config.empty()) throw invalid_argument("--config guard.yaml is required (sections serve: and policy:)");
    const auto policy = load_policy(f->config);
    run_serve(cmd, *f, g, [policy](serve::InferenceCore& core, const ServeFlags& flags) -> std::shared_ptr<void> {
      const auto [name, ref] = guarded_model(flags);
      control::ControllerOptions o;
      o.registry_dir = flags.core.source.registry;
      o.trust_keys = flags.core.source.trust_keys;
      o.log_key = flags.core.source.log_key;
      o.model = ref.model;
      o.served_name = name;
      auto controller = std::make_shared<control::Controller>(o, policy, core);
      std::weak_ptr<control::Controller> weak = controller;
      core.set_control({[weak] {
                          const auto c = weak.lock();
                          return c ? c->status() : nlohmann::json(nullptr);
                        },
                        [weak](const std::string& actor) {
                          const auto c = weak.lock();
                          if (!c) throw unavailable("the controller has stopped");
                          return c->request_hardening(actor);
                        },
                        [weak](const std::string& actor, const std::string& decision) {
                          const auto c = weak.lock();
                          if (!c) throw unavailable("the controller has stopped");
                          return c->decide(actor, decision);
                        }});
      controller->start();
      std::cerr << "guard: watching '" << name << "' (registry " << ref.model << "@production), state "
                << control::to_string(controller->state()) << '\n';
      return controller;
    });
  });
}

}  // namespace bulwark::cli
