// The threat page: the verdict table (one row per check, its ATLAS technique and mitigations),
// the evidence's facts, the charts and the policy it was judged by. Every text from the evidence
// or the ATLAS data is HTML-escaped here, and reaches the script only as JSON in a data block.
#include <algorithm>
#include <string>

#include "core/version.h"
#include "report/detail/assets.h"
#include "report/detail/page_parts.h"
#include "report/html.h"
#include "report/threat.h"

namespace bulwark::report {
namespace {

using nlohmann::json;

constexpr const char kThreatCss[] =
    ".verdict { display: inline-block; min-width: 58px; padding: 1px 8px; border-radius: 10px; color: #fff; "
    "font-weight: 600; text-align: center; }\n"
    ".verdict.pass { background: #1a7f37; } .verdict.warn { background: #9a6700; } "
    ".verdict.fail { background: #cf222e; } .verdict.missing { background: #6e7781; }\n"
    "table.threat td ul { margin: 0; padding-left: 16px; }\n"
    "table.threat td.technique { min-width: 180px; } table.threat td.action code { white-space: pre-wrap; "
    "word-break: break-word; }\n"
    ".atlas-id { font-family: ui-monospace, monospace; font-weight: 600; }\n"
    ".ours { color: #9a6700; font-size: 12px; }\n"
    ".chart.small { height: 200px; max-width: 640px; }\n"
    "pre.policy { background: #f6f8fa; padding: 8px 12px; font-size: 12px; }\n";

std::string esc(const std::string& s) { return html_escape(s); }

std::string fact(const std::string& name, const std::string& value_html) {
  return "<dt>" + esc(name) + "</dt><dd>" + value_html + "</dd>\n";
}

std::string badge(Verdict v) {
  const std::string s = to_string(v);
  return "<span class=\"verdict " + s + "\">" + s + "</span>";
}

// Backquoted spans in an action are commands: shown as code.
std::string action_html(const std::string& action) {
  std::string out;
  bool code = false;
  size_t from = 0;
  for (size_t at = action.find('`'); at != std::string::npos; at = action.find('`', from)) {
    out += esc(action.substr(from, at - from)) + (code ? "</code>" : "<code>");
    code = !code;
    from = at + 1;
  }
  out += esc(action.substr(from));
  if (code) out += "</code>";
  return out;
}

std::string mitigation_html(const ThreatMitigation& m) {
  std::string out = "<li><span class=\"atlas-id\">" + esc(m.id) + "</span> " + esc(m.name);
  if (!m.listed) {
    out += m.listed_for.empty()
               ? " <span class=\"ours\">(our mapping: ATLAS does not list it for this technique)</span>"
               : " <span class=\"ours\">(our mapping: ATLAS lists it for " + esc(m.listed_for) + ")</span>";
  }
  return out + "</li>";
}

std::string row_html(const ThreatRow& r) {
  std::string out = "<tr data-check=\"" + esc(r.key) + "\" data-technique=\"" + esc(r.technique_id) +
                    "\" data-verdict=\"" + to_string(r.verdict) + "\">";
  out += "<td class=\"technique\"><span class=\"atlas-id\">" + esc(r.technique_id) + "</span><br>" +
         esc(r.technique_name) + "</td>";
  out += "<td><ul>";
  for (const auto& m : r.mitigations) out += mitigation_html(m);
  out += "</ul></td>";
  out += "<td>" + esc(r.check) + "</td><td><ul>";
  for (const auto& e : r.evidence) out += "<li>" + esc(e) + "</li>";
  if (r.evidence.empty()) out += "<li>none found</li>";
  out += "</ul></td>";
  out += "<td>" + badge(r.verdict) + "<br>" + esc(r.reason) + "</td>";
  out += "<td class=\"action\">" + (r.action.empty() ? std::string("&ndash;") : action_html(r.action)) + "</td></tr>\n";
  return out;
}

std::string facts(const ThreatReport& r) {
  const auto& e = r.evidence;
  const json counts = r.to_json()["counts"];
  std::string out = "<dl class=\"facts\">\n";
  out += fact("Overall", badge(r.overall()) + " " + std::to_string(counts["pass"].get<int>()) + " pass, " +
                             std::to_string(counts["warn"].get<int>()) + " warn, " +
                             std::to_string(counts["fail"].get<int>()) + " fail, " +
                             std::to_string(counts["missing"].get<int>()) + " missing");
  out += fact("Model version",
              esc(e.model) + (!e.requested.empty() && e.requested != e.model ? " (" + esc(e.requested) + ")" : "") +
                  ", stage " + esc(e.stage));
  out += fact("model.pt SHA-256", "<code>" + esc(e.model_sha256) + "</code>");
  out += fact("Registry", esc(e.registry));
  out += fact("Serve config", e.serve ? esc(e.serve->config_path) : "not given");
  out += fact("Policy", esc(r.policy_source));
  out += fact("MITRE ATLAS data", "version " + esc(r.atlas_version));
  out += fact("Generated", esc(r.generated));
  return out + "</dl>\n";
}

std::string table(const ThreatReport& r) {
  std::string out = "<section id=\"techniques\"><h2>ATLAS techniques and Bulwark's checks</h2>\n";
  out +=
      "<p class=\"note\">Each row: an ATLAS technique, the ATLAS mitigations Bulwark's check stands for (marked when "
      "the mapping is ours rather than ATLAS's), what Bulwark checked, what it found, the verdict against the policy, "
      "and what to do. No evidence is <em>missing</em>, never a pass.</p>\n";
  out +=
      "<table class=\"data threat\">\n<tr><th>Technique</th><th>Mitigations</th><th>Check</th><th>Evidence</th>"
      "<th>Verdict</th><th>What to do</th></tr>\n";
  for (const auto& row : r.rows) out += row_html(row);
  return out + "</table>\n</section>\n";
}

std::string techniques_glossary(const ThreatReport& r) {
  std::string out = "<section id=\"atlas\"><h2>The techniques, as ATLAS describes them</h2>\n<dl class=\"facts\">\n";
  std::vector<std::string> seen;
  for (const auto& row : r.rows) {
    if (std::find(seen.begin(), seen.end(), row.technique_id) != seen.end()) continue;
    seen.push_back(row.technique_id);
    out += fact(row.technique_id + " " + row.technique_name, esc(row.technique_summary));
  }
  return out + "</dl>\n</section>\n";
}

std::string charts(const ThreatReport& r) {
  std::string out =
      "<section id=\"charts\"><h2>Verdicts</h2>\n"
      "<div class=\"chart small\"><canvas id=\"chart-verdicts\" data-chart=\"verdicts\"></canvas></div>\n";
  if (r.evidence.attack && !r.evidence.attack->results.empty()) {
    out += "<h3>Robust accuracy (" + esc(r.evidence.attack->run.kind) + " run " +
           esc(r.evidence.attack->run.run_id.substr(0, 12)) +
           ")</h3>\n"
           "<div class=\"chart\"><canvas id=\"chart-robustness\" data-chart=\"robustness\"></canvas></div>\n";
  }
  return out + "</section>\n";
}

}  // namespace

int threat_chart_count(const ThreatReport& r) {
  return 1 + (r.evidence.attack && !r.evidence.attack->results.empty() ? 1 : 0);
}

std::string render_threat_html(const ThreatReport& r) {
  const std::string title = "Bulwark threat report: " + r.evidence.model;
  std::string page =
      "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
      "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>" +
      esc(title) + "</title>\n<style>\n" + detail::kPageCss + kThreatCss + "</style>\n</head>\n";
  page += "<body data-errors=\"0\" data-charts-drawn=\"0\" data-rows=\"0\" data-charts-expected=\"" +
          std::to_string(threat_chart_count(r)) + "\">\n";
  page += "<script>" + std::string(detail::kErrorHook) + "</script>\n";
  page += "<header><h1>" + esc(title) + "</h1></header>\n<main>\n";
  page += "<section id=\"summary\"><h2>Summary</h2>\n" + facts(r) + "</section>\n";
  page += table(r) + charts(r) + techniques_glossary(r);
  page += "<section id=\"policy\"><h2>Policy</h2>\n<p class=\"note\">" + esc(r.policy_source) +
          " (every key not set there has its documented default).</p>\n<pre class=\"policy\">" +
          esc(r.policy.to_json().dump(2)) + "</pre>\n</section>\n";
  page += "</main>\n<footer>Bulwark " + std::string(BULWARK_VERSION) + " &middot; MITRE ATLAS data " +
          esc(r.atlas_version) + " (Apache License 2.0, &copy; MITRE), embedded &middot; charts by Chart.js " +
          chart_js_version() + " (MIT licence), inlined: this page loads nothing from the network.</footer>\n";
  page += "<script type=\"application/json\" id=\"threat-data\">" + json_for_script(r.to_json()) + "</script>\n";
  page += "<script>\n" + std::string(detail::kChartJs) + "\n</script>\n";
  page += "<script>\n" + std::string(detail::kThreatPageJs) + "\n</script>\n</body>\n</html>\n";
  return page;
}

}  // namespace bulwark::report
