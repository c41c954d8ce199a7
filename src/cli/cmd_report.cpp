// bulwark report — one self-contained HTML page of a closed-loop run: events, traffic, robustness.
#include <cstdio>
#include <iostream>
#include <optional>

#include "cli/common.h"
#include "core/error.h"
#include "core/files.h"
#include "report/report.h"

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

}  // namespace

void register_report(CLI::App& app, GlobalOptions& g) {
  auto f = std::make_shared<ReportFlags>();
  auto* cmd = app.add_subcommand("report", "Render a closed-loop run as one self-contained HTML page (charts inline)");
  cmd->add_option("--events", f->events, "Event log (JSON lines, as serve/guard write them)")->required();
  cmd->add_option("--traffic", f->traffic, "Traffic log (JSON lines, one per second, as `bulwark traffic` writes)")
      ->required();
  cmd->add_option("--robustness", f->robustness,
                  "LABEL=ATTACK.json from `bulwark --json attack`; repeat to compare (baseline=a.json hardened=b.json)")
      ->take_all();
  cmd->add_option("--title", f->render.title, "Page title")->capture_default_str();
  cmd->add_option("--out", f->out, "HTML file to write (atomically)")->required();
  cmd->callback([f, &g] { run_report(*f, g); });
}

}  // namespace bulwark::cli
