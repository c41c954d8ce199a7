#include "report/html.h"

#include <algorithm>
#include <cstdio>
#include <set>

#include "core/version.h"
#include "report/chart_data.h"
#include "report/detail/assets.h"
#include "report/detail/page_parts.h"
#include "report/summary.h"

namespace bulwark::report {
namespace {

using nlohmann::json;

std::string fmt(const char* format, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, format, v);
  return buf;
}

std::string pct(const std::optional<double>& v) { return v ? fmt("%.1f%%", 100 * *v) : "&ndash;"; }
std::string ms(const std::optional<double>& v) { return v ? fmt("%.1f ms", *v) : "&ndash;"; }
std::string secs(double v) { return fmt("%.1f s", v); }

std::string joined(const std::vector<std::string>& items, const std::string& sep) {
  std::string out;
  for (const auto& s : items) out += (out.empty() ? "" : sep) + html_escape(s);
  return out.empty() ? "&ndash;" : out;
}

std::string cell(const std::string& html, bool numeric = false) {
  return numeric ? "<td class=\"num\">" + html + "</td>" : "<td>" + html + "</td>";
}

std::string header_row(const std::vector<std::string>& names) {
  std::string out = "<tr>";
  for (const auto& n : names) out += "<th>" + html_escape(n) + "</th>";
  return out + "</tr>\n";
}

std::string facts(const ReportSummary& s) {
  const auto fact = [](const std::string& name, const std::string& value) {
    return "<dt>" + name + "</dt><dd>" + value + "</dd>\n";
  };
  std::string out = "<dl class=\"facts\">\n";
  out += fact("Traffic", secs(s.duration_s) + ", " + std::to_string(s.events) + " events");
  out +=
      fact("Attack began", s.attack_start_t ? "t = " + secs(*s.attack_start_t) + " (first second with attacked inputs)"
                                            : "no attacked traffic in the log");
  out += fact("Time to alarm", s.time_to_alarm_s ? secs(*s.time_to_alarm_s)
                                                 : (s.attack_start_t ? "no alarm after the attack began" : "&ndash;"));
  out += fact("Time to promotion", s.time_to_promotion_s
                                       ? secs(*s.time_to_promotion_s)
                                       : (s.attack_start_t ? "no promotion after the attack began" : "&ndash;"));
  out +=
      fact("Alarms", std::to_string(s.alarms) + " (" + std::to_string(s.alarms_before_attack) + " before the attack)");
  out += fact("Model versions served", joined(s.model_versions, " &rarr; "));
  return out + "</dl>\n";
}

std::string summary_section(const ReportSummary& s) {
  std::string out = "<section id=\"summary\"><h2>Summary</h2>\n" + facts(s);
  out += "<table class=\"data\">\n" +
         header_row({"Phase", "Seconds", "Requests", "Failed", "Benign accuracy", "Attacked accuracy", "Flag rate",
                     "Latency p50", "Latency p99 (max)", "Model versions"});
  for (const auto& p : s.phases) {
    out += "<tr>" + cell(html_escape(p.phase)) + cell(std::to_string(p.seconds), true) +
           cell(std::to_string(p.sent), true) + cell(std::to_string(p.failed), true) +
           cell(pct(p.benign_accuracy), true) + cell(pct(p.attacked_accuracy), true) + cell(pct(p.flag_rate), true) +
           cell(ms(p.latency_ms_p50), true) + cell(ms(p.latency_ms_p99), true) + cell(joined(p.model_versions, ", ")) +
           "</tr>\n";
  }
  out +=
      "</table>\n<p class=\"note\">Accuracy and flag rate are pooled over each phase's inputs. The log holds "
      "per-second latency percentiles: p50 is their median weighted by answered requests, p99 the highest "
      "second's p99 (an upper bound on the phase's p99).</p>\n";
  return out + "</section>\n";
}

std::string timeline_section() {
  return "<section id=\"timeline\"><h2>Timeline</h2>\n"
         "<p class=\"note\">Per second of traffic: accuracy on benign and on attacked inputs, the share of inputs "
         "the detector flagged, the model version served (right axis). Background bands are the controller's "
         "states; vertical lines mark alarms, promotions and rollbacks.</p>\n"
         "<div class=\"chart tall\"><canvas id=\"chart-timeline\" data-chart=\"timeline\"></canvas></div>\n"
         "<div id=\"timeline-legend\" class=\"legend\"></div>\n</section>\n";
}

std::string robustness_table(const json& group) {
  std::set<double> eps_set;
  for (const auto& series : group["series"]) {
    for (const auto& p : series["points"]) eps_set.insert(p[0].get<double>());
  }
  std::vector<std::string> header{"Model", "Attack"};
  for (double e : eps_set) header.push_back("eps " + fmt("%g", e));
  std::string out = "<table class=\"data\">\n" + header_row(header);
  for (const auto& series : group["series"]) {
    out += "<tr>" + cell(html_escape(series["label"].get<std::string>())) +
           cell(html_escape(series["attack"].get<std::string>()));
    for (double e : eps_set) {
      std::optional<double> acc;
      for (const auto& p : series["points"]) {
        if (p[0].get<double>() == e) acc = p[1].get<double>();
      }
      out += cell(pct(acc), true);
    }
    out += "</tr>\n";
  }
  return out + "</table>\n";
}

std::string robustness_section(const ReportInputs& in, const json& groups) {
  std::string out = "<section id=\"robustness\"><h2>Robustness</h2>\n";
  if (groups.empty()) {
    return out +
           "<p class=\"note\">No robustness results given (<code>--robustness LABEL=ATTACK.json</code>).</p>\n"
           "</section>\n";
  }
  out +=
      "<p class=\"note\">Robust accuracy against each attack as eps grows, from the clean accuracy at eps = 0; "
      "the worst case is the lowest over the attacks at each eps.</p>\n";
  for (size_t i = 0; i < groups.size(); ++i) {
    out += "<h3>" + html_escape(groups[i]["norm"].get<std::string>()) + " threat model</h3>\n";
    out += "<div class=\"chart\"><canvas id=\"chart-robustness-" + std::to_string(i) +
           "\" data-chart=\"robustness\" data-group=\"" + std::to_string(i) + "\"></canvas></div>\n";
    out += robustness_table(groups[i]);
  }
  out += "<ul class=\"sources\">\n";
  for (const auto& r : in.robustness) {
    out += "<li>" + html_escape(r.label) + ": " + html_escape(r.path) +
           (r.model.empty() ? "" : " (model " + html_escape(r.model) + ")") + ", n = " + std::to_string(r.n) +
           ", clean accuracy " + pct(r.clean_accuracy) + "</li>\n";
  }
  return out + "</ul>\n</section>\n";
}

std::string optional_number(const std::optional<double>& v) { return v ? fmt("%.4g", *v) : "&ndash;"; }

// Controller and registry events carry no statistic (0 / 0 as written): show nothing for them.
std::string statistic_cell(const EventRecord& e) {
  if (e.statistic.value_or(0) == 0 && e.threshold.value_or(0) == 0) return "";
  return optional_number(e.statistic) + " / " + optional_number(e.threshold);
}

std::string event_row(const EventRecord& e, double origin) {
  std::string details = e.details.empty() ? "" : e.details.dump(-1, ' ', false, json::error_handler_t::replace);
  if (details.size() > 300) details = details.substr(0, 297) + "...";
  std::string who = e.detector;
  if (!e.subject.empty()) who += (who.empty() ? "" : " ") + ("client " + e.subject);
  return "<tr>" + cell(fmt("%+.1f s", e.time_s - origin), true) + cell(html_escape(e.time)) +
         cell(html_escape(e.kind)) + cell(html_escape(who)) + cell(statistic_cell(e), true) +
         cell("<code>" + html_escape(details) + "</code>") + "</tr>\n";
}

std::string events_section(const ReportInputs& in, size_t max_rows) {
  std::string out = "<section id=\"events\"><h2>Events</h2>\n";
  if (in.events.empty()) return out + "<p class=\"note\">The event log holds no events.</p>\n</section>\n";
  out += "<table class=\"data events\">\n" +
         header_row({"t", "Time (UTC)", "Kind", "Detector / subject", "Statistic / threshold", "Details"});
  const double origin = in.traffic_start_unix();
  const size_t shown = std::min(max_rows, in.events.size());
  for (size_t i = 0; i < shown; ++i) out += event_row(in.events[i], origin);
  out += "</table>\n";
  if (shown < in.events.size()) {
    out += "<p class=\"note\">" + std::to_string(in.events.size() - shown) + " later events not listed (of " +
           std::to_string(in.events.size()) + "; see " + html_escape(in.sources.events_path) + ").</p>\n";
  }
  return out + "</section>\n";
}

std::string footer(const ReportInputs& in) {
  return "<footer>Bulwark " + std::string(BULWARK_VERSION) + " &middot; events " + html_escape(in.sources.events_path) +
         " &middot; traffic " + html_escape(in.sources.traffic_path) + " &middot; charts by Chart.js " +
         chart_js_version() + " (MIT licence), inlined: this page loads nothing from the network.</footer>\n";
}

}  // namespace

std::string html_escape(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

std::string json_for_script(const json& value) {
  const std::string text = value.dump(-1, ' ', false, json::error_handler_t::replace);
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    // These occur in JSON text only inside strings, where the escapes mean the same characters.
    switch (c) {
      case '<':
        out += "\\u003c";
        break;
      case '>':
        out += "\\u003e";
        break;
      case '&':
        out += "\\u0026";
        break;
      default:
        out += c;
    }
  }
  return out;
}

const char* chart_js_version() { return detail::kChartJsVersion; }

int expected_chart_count(const ReportInputs& in) { return 1 + static_cast<int>(robustness_data(in).size()); }

std::string render_report(const ReportInputs& in, const RenderOptions& options) {
  const ReportSummary summary = summarize(in);
  const json data = chart_data(in);
  const int charts = 1 + static_cast<int>(data["robustness"].size());
  std::string page =
      "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
      "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>" +
      html_escape(options.title) + "</title>\n<style>\n" + detail::kPageCss + "</style>\n</head>\n";
  page += "<body data-errors=\"0\" data-charts-drawn=\"0\" data-charts-expected=\"" + std::to_string(charts) + "\">\n";
  page += "<script>" + std::string(detail::kErrorHook) + "</script>\n";
  page += "<header><h1>" + html_escape(options.title) + "</h1></header>\n<main>\n";
  page += summary_section(summary) + timeline_section() + robustness_section(in, data["robustness"]) +
          events_section(in, options.max_event_rows);
  page += "</main>\n" + footer(in);
  page += "<script type=\"application/json\" id=\"report-data\">" + json_for_script(data) + "</script>\n";
  page += "<script>\n" + std::string(detail::kChartJs) + "\n</script>\n";
  page += "<script>\n" + std::string(detail::kPageJs) + "\n</script>\n</body>\n</html>\n";
  return page;
}

}  // namespace bulwark::report
