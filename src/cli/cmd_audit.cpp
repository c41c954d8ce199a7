// bulwark audit / runs — the registry's tamper-evident audit log and its run records.
#include <chrono>
#include <cstdio>
#include <ctime>
#include <iostream>

#include "cli/common.h"
#include "core/error.h"
#include "core/files.h"
#include "registry/registry.h"

namespace bulwark::cli {
namespace {

using nlohmann::json;

// "2026-11-21", "2026-11-21T18:00:00Z" (a timestamp prefix, compared as text), or an age:
// "30s", "10m", "2h", "7d".
std::string since_timestamp(const std::string& since) {
  if (since.empty()) return "";
  if (since.size() >= 4 && std::isdigit(static_cast<unsigned char>(since[0])) && since.find('-') != std::string::npos) {
    return since;
  }
  size_t used = 0;
  double n = 0;
  try {
    n = std::stod(since, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  const std::string unit = since.substr(used);
  const double scale = unit == "s" ? 1 : unit == "m" ? 60 : unit == "h" ? 3600 : unit == "d" ? 86400 : -1;
  if (used == 0 || scale < 0 || n < 0) {
    throw invalid_argument("--since '" + since + "': give a time (2026-11-21T18:00:00Z) or an age (30s, 10m, 2h, 7d)");
  }
  const auto then = std::chrono::system_clock::now() - std::chrono::milliseconds(static_cast<int64_t>(n * scale * 1000));
  const std::time_t t = std::chrono::system_clock::to_time_t(then);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  return buf;
}

struct AuditFlags {
  std::string dir = "bulwark-registry";
  std::string since, checkpoint, log_key, witness, publish;
  int64_t after = 0;
  int64_t limit = 1000;
  std::string kind;
};

constexpr const char* kRegistryHelp = "Registry: a directory, or postgresql://USER@HOST/DB?dir=SHARED_DIR";

registry::Registry open_registry(const AuditFlags& f) { return registry::Registry(f.dir, registry::local_actor()); }

void run_show(const AuditFlags& f, const GlobalOptions& g) {
  auto reg = open_registry(f);
  auto entries = reg.audit().entries(f.after, since_timestamp(f.since));
  if (static_cast<int64_t>(entries.size()) > f.limit) entries.erase(entries.begin(), entries.end() - f.limit);
  if (g.json) {
    json out = json::array();
    for (const auto& e : entries) out.push_back(e.to_json());
    std::cout << out.dump(2) << std::endl;
    return;
  }
  std::vector<std::vector<std::string>> rows;
  for (const auto& e : entries) {
    rows.push_back({std::to_string(e.seq), e.time, e.actor, e.action, e.subject,
                    e.details.size() > 100 ? e.details.substr(0, 97) + "..." : e.details});
  }
  print_table({"SEQ", "TIME", "ACTOR", "ACTION", "SUBJECT", "DETAILS"}, rows);
}

void run_verify(const AuditFlags& f, const GlobalOptions& g) {
  auto reg = open_registry(f);
  const std::string external = f.checkpoint.empty() ? "" : read_file(f.checkpoint);
  const auto v = reg.audit().verify(
      registry::AuditVerifyOptions{external, f.log_key.empty() ? "" : read_file(f.log_key), f.witness});
  json j{{"ok", v.ok}, {"entries", v.entries}, {"checked", v.checked}, {"uncovered", v.uncovered}};
  if (!v.ok) {
    j["problem"] = v.problem;
    j["first_bad_entry"] = v.first_bad;
  }
  std::string checked;
  for (const auto& c : v.checked) checked += (checked.empty() ? "" : ", ") + c;
  std::vector<std::pair<std::string, std::string>> rows{
      {"audit log", v.ok ? "OK" : "FAILED"}, {"entries", std::to_string(v.entries)},
      {"checked", checked.empty() ? "-" : checked}};
  if (v.uncovered > 0) {
    rows.push_back({"WARNING", std::to_string(v.uncovered) + " newest entries are not yet covered by a signed checkpoint"});
  }
  print_result(g, j, rows);
  if (!v.ok) throw data_format("audit log: " + v.problem);
}

void run_runs_list(const AuditFlags& f, const GlobalOptions& g) {
  auto reg = open_registry(f);
  const auto runs = registry::list_runs(reg, f.kind, f.limit);
  json out = json::array();
  std::vector<std::vector<std::string>> rows;
  for (const auto& r : runs) {
    out.push_back(r.to_json());
    rows.push_back({r.run_id.substr(0, 12), r.kind, r.status, r.start_time, r.end_time.empty() ? "-" : r.end_time,
                    r.artifact.empty() ? "-" : r.artifact});
  }
  if (g.json) std::cout << out.dump(2) << std::endl;
  else print_table({"RUN", "KIND", "STATUS", "START", "END", "ARTIFACT"}, rows);
}

void run_runs_show(const std::string& id, const AuditFlags& f, const GlobalOptions& g) {
  auto reg = open_registry(f);
  const auto r = registry::show_run(reg, id);
  std::vector<std::pair<std::string, std::string>> rows{
      {"run", r.run_id}, {"kind", r.kind}, {"status", r.status}, {"start", r.start_time},
      {"end", r.end_time.empty() ? "-" : r.end_time}, {"command", r.command},
      {"artifact", r.artifact.empty() ? "-" : r.artifact + " (sha256 " + r.artifact_sha256.substr(0, 16) + ")"}};
  for (const auto& [k, v] : r.params.items()) rows.push_back({"param " + k, v.get<std::string>()});
  for (const auto& m : r.metrics) {
    char value[32];
    std::snprintf(value, sizeof value, "%.6g", m.value);
    rows.push_back({"metric " + m.key + (m.step > 0 ? " [" + std::to_string(m.step) + "]" : ""), value});
  }
  print_result(g, r.to_json(), rows);
}

}  // namespace

void register_audit(CLI::App& app, GlobalOptions& g) {
  auto f = std::make_shared<AuditFlags>();
  auto* audit = app.add_subcommand("audit", "The registry's tamper-evident audit log");
  audit->require_subcommand(1);
  auto* show = audit->add_subcommand("show", "List audit entries");
  show->add_option("--since", f->since, "From this time (2026-11-21T18:00:00Z) or age (30s, 10m, 2h, 7d)");
  show->add_option("--after", f->after, "Entries after this sequence number")->check(CLI::NonNegativeNumber);
  show->add_option("--limit", f->limit, "At most the last N entries")->check(CLI::Range(int64_t{1}, int64_t{1000000}))
      ->capture_default_str();
  show->add_option("--registry", f->dir, kRegistryHelp)->capture_default_str();
  show->callback([f, &g] { run_show(*f, g); });
  auto* verify = audit->add_subcommand("verify", "Check every entry's hash, the chain and the signed checkpoint(s)");
  verify->add_option("--checkpoint", f->checkpoint, "A checkpoint kept elsewhere (audit checkpoint) to check against");
  verify->add_option("--log-key", f->log_key,
                     "The log's public key as kept outside the registry (a copy of its log.pub): a re-keyed log fails");
  verify->add_option("--witness", f->witness,
                     "A directory of published checkpoints (audit checkpoint --publish): each must be consistent with "
                     "the log (RFC 9162 proof); a newer one than the registry's is a rollback");
  verify->add_option("--registry", f->dir, kRegistryHelp)->capture_default_str();
  verify->callback([f, &g] { run_verify(*f, g); });
  auto* cp = audit->add_subcommand("checkpoint", "Print the current signed checkpoint, or publish it to a witness");
  cp->add_option("--publish", f->publish,
                 "Copy it into this directory as checkpoint.<size> (a place the registry's writers cannot rewrite)");
  cp->add_option("--registry", f->dir, kRegistryHelp)->capture_default_str();
  cp->callback([f, &g] {
    auto reg = open_registry(*f);  // refuses a location that is not a registry
    if (f->publish.empty()) {
      std::cout << read_file(reg.dir() + "/audit.checkpoint");
      return;
    }
    const std::string path = reg.audit().publish_checkpoint(f->publish);
    print_result(g, json{{"published", path}}, {{"published", path}});
  });

  auto* runs = app.add_subcommand("runs", "Run records of train, harden, attack and detect evaluate");
  runs->require_subcommand(1);
  auto* list = runs->add_subcommand("list", "List runs, newest first");
  list->add_option("--kind", f->kind, "Only train, harden, attack or detect-evaluate");
  list->add_option("--limit", f->limit, "At most N runs")->check(CLI::Range(int64_t{1}, int64_t{1000000}));
  list->add_option("--registry", f->dir, kRegistryHelp)->capture_default_str();
  list->callback([f, &g] { run_runs_list(*f, g); });
  auto id = std::make_shared<std::string>();
  auto* rshow = runs->add_subcommand("show", "A run's params, metrics, tags and artifact");
  rshow->add_option("RUN_ID", *id, "Run id or a unique prefix")->required();
  rshow->add_option("--registry", f->dir, kRegistryHelp)->capture_default_str();
  rshow->callback([id, f, &g] { run_runs_show(*id, *f, g); });
}

}  // namespace bulwark::cli
