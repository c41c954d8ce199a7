// report/html.h — the page: one self-contained HTML file (Chart.js, script, styles and data all
// inline; no URL to load, so it opens offline and from a file:// path). Text from the inputs is
// HTML-escaped in the tables and travels to the script only as JSON inside a
// <script type="application/json"> block, with every '<' written as \u003c.
//
// The page checks itself once drawn: <body data-charts-expected="N" data-charts-drawn="M"
// data-errors="E">, M = the charts whose canvas holds drawn pixels, E = script errors and
// console.error calls; a good page has M == N and E == 0 (the report test reads them in Chromium).
#pragma once

#include <string>

#include "report/inputs.h"

namespace bulwark::report {

struct RenderOptions {
  std::string title = "Bulwark closed-loop report";
  size_t max_event_rows = 500;  // the event table lists the first this many, then says how many more
};

std::string render_report(const ReportInputs& in, const RenderOptions& options = {});

// The charts a rendered page draws: the timeline plus one per robustness norm.
int expected_chart_count(const ReportInputs& in);

// Chart.js version inlined in every page ("3.9.1").
const char* chart_js_version();

// & < > " ' as entities: safe in element text and in quoted attribute values.
std::string html_escape(const std::string& text);

// JSON text safe inside a <script> element: '<', '>' and '&' as \u003c, \u003e, \u0026 (so neither
// "</script" nor "<!--" can occur); invalid UTF-8 is replaced, not thrown on.
std::string json_for_script(const nlohmann::json& value);

}  // namespace bulwark::report
