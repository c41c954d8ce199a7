// bulwark report — one self-contained HTML page of a closed-loop run: events, traffic, robustness;
// `bulwark report threat` — one page of a registry version's threats mapped to MITRE ATLAS.
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <optional>

#include "cli/common.h"
#include "core/error.h"
#include "core/files.h"
#include "report/report.h"
#include "threat/threat.h"

namespace bulwark::cli {
namespace {

using nlohmann::json;

struct ReportFlags {
  std::string events, traffic, out;
  std::vector<std::string> robustness;  // LABEL=PATH
  report::RenderOptions render;
};

std::string pct_or_dash(const std::optional<double>& v) { return v ? percent(*v, 1) : "-"; }

std::string ms_or_dash(const std::optional<double>& v) {
  if (!v) return "-";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f", *v);
  return buf;
}

std::string seconds_or(const std::optional<double>& v, const std::string& none) {
  if (!v) return none;
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f s", *v);
  return buf;
}

void print_human(const GlobalOptions& g, const std::string& out, size_t bytes, const report::ReportSummary& s) {
  std::cout << "wrote " << out << " (" << with_commas(static_cast<int64_t>(bytes)) << " bytes)\n\n";
  std::vector<std::vector<std::string>> rows;
  for (const auto& p : s.phases) {
    std::string versions;
    for (const auto& v : p.model_versions) versions += (versions.empty() ? "" : ",") + v;
    rows.push_back({p.phase, std::to_string(p.seconds), with_commas(p.sent), with_commas(p.failed),
                    pct_or_dash(p.benign_accuracy), pct_or_dash(p.attacked_accuracy), pct_or_dash(p.flag_rate),
                    ms_or_dash(p.latency_ms_p50), ms_or_dash(p.latency_ms_p99), versions.empty() ? "-" : versions});
  }
  print_table({"PHASE", "SECONDS", "REQUESTS", "FAILED", "BENIGN ACC", "ATTACKED ACC", "FLAG RATE", "P50 MS",
               "P99 MS (MAX)", "VERSIONS"},
              rows);
  std::string versions;
  for (const auto& v : s.model_versions) versions += (versions.empty() ? "" : " -> ") + v;
  std::cout << '\n';
  print_result(
      g, json(),
      {{"attack began", s.attack_start_t ? seconds_or(s.attack_start_t, "") : "no attacked traffic"},
       {"time to alarm", seconds_or(s.time_to_alarm_s, "-")},
       {"time to promotion", seconds_or(s.time_to_promotion_s, "-")},
       {"alarms", std::to_string(s.alarms) + " (" + std::to_string(s.alarms_before_attack) + " before the attack)"},
       {"model versions", versions.empty() ? "-" : versions}});
}

void run_report(const ReportFlags& f, const GlobalOptions& g) {
  report::ReportSources sources;
  sources.events_path = f.events;
  sources.traffic_path = f.traffic;
  for (const auto& r : f.robustness) sources.robustness.push_back(report::parse_labelled_path(r));
  const report::ReportInputs inputs = report::load_report_inputs(sources);
  const std::string html = report::render_report(inputs, f.render);
  atomic_write_file(f.out, html);
  const report::ReportSummary summary = report::summarize(inputs);
  if (g.json) {
    json j = summary.to_json();
    j["out"] = f.out;
    j["bytes"] = html.size();
    j["charts"] = report::expected_chart_count(inputs);
    j["chart_js_version"] = report::chart_js_version();
    std::cout << j.dump(2) << std::endl;
    return;
  }
  print_human(g, f.out, html.size(), summary);
}

void run_threat(const threat::ThreatOptions& o, const GlobalOptions& g) {
  const auto r = threat::write_threat_report(o);
  const auto bytes = std::filesystem::file_size(o.out);
  if (g.json) {
    json j = r.to_json();
    j["out"] = o.out;
    j["bytes"] = bytes;
    std::cout << j.dump(2) << std::endl;
    return;
  }
  std::cout << "wrote " << o.out << " (" << with_commas(static_cast<int64_t>(bytes)) << " bytes)\n\n";
  std::vector<std::vector<std::string>> rows;
  for (const auto& row : r.rows) {
    rows.push_back({row.key, row.technique_id, row.technique_name, report::to_string(row.verdict), row.reason});
  }
  print_table({"CHECK", "ATLAS", "TECHNIQUE", "VERDICT", "REASON"}, rows);
  std::cout << '\n';
  const json counts = r.to_json()["counts"];
  print_result(g, json(),
               {{"model", r.evidence.model + " (model.pt " + r.evidence.model_sha256.substr(0, 16) + ")"},
                {"overall", report::to_string(r.overall()) + ": " + counts["pass"].dump() + " pass, " +
                                counts["warn"].dump() + " warn, " + counts["fail"].dump() + " fail, " +
                                counts["missing"].dump() + " missing"},
                {"atlas", "MITRE ATLAS data " + r.atlas_version},
                {"policy", r.policy_source}});
}

void register_threat(CLI::App* report_cmd, GlobalOptions& g) {
  auto o = std::make_shared<threat::ThreatOptions>();
  auto* cmd = report_cmd->add_subcommand(
      "threat", "One page for a registry model version: ATLAS techniques, Bulwark's checks, evidence and verdicts");
  cmd->add_option("--registry", o->sources.registry, "Registry: a directory, or postgresql://USER@HOST/DB?dir=SHARED_DIR")
      ->required();
  cmd->add_option("--model", o->sources.model, "NAME@VERSION, NAME@production, NAME@staging or NAME@latest")
      ->required();
  cmd->add_option("--serve-config", o->sources.serve_config,
                  "The YAML `bulwark serve --config` reads: auth, rate limits, per-client detectors, calibration");
  cmd->add_option("--policy", o->policy, "Thresholds (YAML, docs/report.md); default: the documented defaults");
  cmd->add_option("--out", o->out, "HTML file to write (atomically)")->required();
  cmd->callback([o, &g] { run_threat(*o, g); });
}

}  // namespace

void register_report(CLI::App& app, GlobalOptions& g) {
  auto f = std::make_shared<ReportFlags>();
  auto* cmd = app.add_subcommand("report", "Render a closed-loop run as one self-contained HTML page (charts inline)");
  // Required unless the `threat` subcommand is given (checked in the callback: CLI11 would demand
  // them of `report threat` too).
  cmd->add_option("--events", f->events, "Event log (JSON lines, as serve/guard write them) (required)");
  cmd->add_option("--traffic", f->traffic,
                  "Traffic log (JSON lines, one per second, as `bulwark traffic` writes) (required)");
  cmd->add_option("--robustness", f->robustness,
                  "LABEL=ATTACK.json from `bulwark --json attack`; repeat to compare (baseline=a.json hardened=b.json)")
      ->take_all();
  cmd->add_option("--title", f->render.title, "Page title")->capture_default_str();
  cmd->add_option("--out", f->out, "HTML file to write (atomically) (required)");
  cmd->callback([f, cmd, &g] {
    if (!cmd->get_subcommands().empty()) return;
    for (const auto& [flag, value] : {std::pair<const char*, std::string>{"--events", f->events},
                                      {"--traffic", f->traffic}, {"--out", f->out}}) {
      if (value.empty()) throw invalid_argument(std::string("report: ") + flag + " is required");
    }
    run_report(*f, g);
  });
  register_threat(cmd, g);
}

}  // namespace bulwark::cli
