// The served configuration, read with serve's own parsers (one meaning for every key). Token
// values never exist here: the tokens file holds hashes, and only ids, roles and rates are kept.
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <map>

#include "core/error.h"
#include "serve/auth.h"
#include "serve/config.h"
#include "threat/detail/gather.h"

namespace bulwark::threat::detail {
namespace {

std::vector<report::TokenSummary> token_summaries(const std::string& path) {
  serve::TokenStore::load(path);  // refuses what the server would refuse, with its messages
  std::vector<report::TokenSummary> out;
  const YAML::Node list = YAML::LoadFile(path)["tokens"];
  for (const auto& n : list) {
    report::TokenSummary t;
    t.id = n["id"].as<std::string>();
    for (const auto& r : n["roles"]) t.roles.push_back(r.as<std::string>());
    t.rate_per_s = n["rate_per_s"] ? n["rate_per_s"].as<double>() : 0;
    out.push_back(std::move(t));
  }
  return out;
}

}  // namespace

report::ServeEvidence serve_evidence(const std::string& path, const std::string& served_model,
                                     bool version_has_calibration) {
  report::ServeEvidence s;
  s.config_path = path;
  std::map<std::string, std::vector<std::string>> flags;
  for (auto& e : serve::load_config_file(path)) flags[e.key] = std::move(e.values);
  const auto one = [&](const std::string& key, const std::string& fallback) {
    const auto it = flags.find(key);
    return it == flags.end() || it->second.empty() ? fallback : it->second.back();
  };
  for (const auto& m : flags["model"]) {
    const auto [name, source] = serve::parse_model_arg(m);
    const std::string prefix = "registry:";
    if (source.rfind(prefix, 0) != 0) continue;
    if (registry::parse_reference(source.substr(prefix.size())).model == served_model) s.served_as.push_back(name);
  }
  const std::string tokens = one("tokens", "");
  s.auth = !tokens.empty();
  if (s.auth) {
    try {
      s.tokens = token_summaries(tokens);
    } catch (const YAML::Exception& e) {
      throw data_format(tokens + ": " + e.what());
    }
  }
  s.tls = !one("tls-cert", "").empty();
  s.stateful = one("stateful", "off");
  s.extraction = one("extraction", "off");
  s.access_log = one("access-log", "-") != "off";
  s.events = !one("events", "").empty();
  for (const auto& c : flags["calibration"]) {
    const auto eq = c.find('=');
    const std::string name = c.substr(0, eq);
    if (eq != std::string::npos && std::find(s.served_as.begin(), s.served_as.end(), name) != s.served_as.end()) {
      s.calibration = true;
      s.calibration_source = "calibration: " + name + "=" + c.substr(eq + 1) + " in " + path;
    }
  }
  // serve loads a registry version's model.detect as its calibration (docs/registry.md).
  if (!s.calibration && version_has_calibration && !s.served_as.empty()) {
    s.calibration = true;
    s.calibration_source = "model.detect in the registry version";
  }
  return s;
}

}  // namespace bulwark::threat::detail
