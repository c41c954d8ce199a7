// A signed registry for the serve tests: model `m` versions 1 and 2 (two different mlps) signed by
// a trusted key, the audit log's public key copied outside the registry, and the server's trust
// flags that point at those copies.
#pragma once

#include <filesystem>
#include <functional>
#include <regex>
#include <stdexcept>
#include <string>
#include <vector>

#include "registry/registry.h"
#include "serve/core.h"
#include "server_fixture.h"

namespace bulwark::testing {

inline std::string bin() { return BULWARK_BIN; }

// A registry with versions 1 and 2 of `m` (two different models), signed by a trusted key.
struct SignedRegistry {
  TempDir dir;
  std::string reg = dir.file("reg");
  SignedRegistry() {
    must(bin() + " registry init --registry " + reg);
    must(bin() + " keys gen --out " + dir.file("k"));
    must(bin() + " keys trust " + dir.file("k.pub") + " --registry " + reg);
    must(bin() + " registry register m " + write_model(dir, "a.pt", "mlp", 1) + " --key " + dir.file("k.key") +
         " --registry " + reg);
    must(bin() + " registry register m " + write_model(dir, "b.pt", "mlp", 2) + " --key " + dir.file("k.key") +
         " --parent 1 --registry " + reg);
    std::filesystem::copy_file(reg + "/log.pub", log_pub);  // the log key as an operator keeps it, outside the registry
  }
  std::string log_pub = dir.file("log-kept-outside.pub");
  // The server's trust roots, from outside the registry directory.
  std::vector<std::string> trust_flags() const { return {"--trust-keys", dir.file("k.pub"), "--log-key", log_pub}; }
  std::string trust_args() const { return " --trust-keys " + dir.file("k.pub") + " --log-key " + log_pub; }
  // A stage change, signed with the operator key.
  CommandResult stage(const std::string& args) const { return cli(args + " --key " + dir.file("k.key")); }
  void trust(serve::CoreOptions& o) const {
    o.source.registry = reg;
    o.source.trust_keys = dir.file("k.pub");
    o.source.log_key = log_pub;
  }
  static CommandResult must(const std::string& cmd) {
    auto r = run_command(cmd);
    if (r.exit_code != 0) throw std::runtime_error(cmd + " failed: " + r.output);
    return r;
  }
  CommandResult cli(const std::string& args) const { return run_command(bin() + " " + args + " --registry " + reg); }
  std::string object_of(int version) const {
    registry::Registry r(reg, "test");
    const auto v = r.resolve(registry::parse_reference("m@" + std::to_string(version)));
    return reg + "/objects/sha256/" + v.files.at("model.pt").substr(0, 2) + "/" + v.files.at("model.pt");
  }
  // Rewrites version 1's bundle with `edit` applied to its decoded payload or signature.
  void edit_bundle(const std::string& field, const std::function<void(std::string&)>& edit) const {
    registry::Registry r(reg, "test");
    auto bundle = nlohmann::json::parse(r.resolve(registry::parse_reference("m@1")).bundle);
    auto& target = field == "payload" ? bundle["dsseEnvelope"]["payload"] : bundle["dsseEnvelope"]["signatures"][0]["sig"];
    std::string bytes = registry::base64_decode(target.get<std::string>());
    edit(bytes);
    target = registry::base64_encode(bytes);
    SQLite::Statement q(r.db(), "UPDATE versions SET bundle = ? WHERE model = 'm' AND version = 1");
    q.bind(1, bundle.dump());
    q.exec();
  }
};

inline std::vector<std::string> with(std::vector<std::string> extra, std::vector<std::string> args) {
  args.insert(args.end(), extra.begin(), extra.end());
  return args;
}

inline double registry_version_served(httplib::Client& c) {
  const auto m = c.Get("/metrics");
  if (!m) return -1;
  std::smatch match;
  static const std::regex re("bulwark_model_registry_version\\{model=\"fashion\"\\} ([0-9]+)");
  return std::regex_search(m->body, match, re) ? std::stod(match[1]) : -1;
}


}  // namespace bulwark::testing
