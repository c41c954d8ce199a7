// report — one self-contained HTML page of a closed-loop run (Chart.js inlined): per-phase accuracy,
// latency and failures; a timeline of accuracy, detector flag rate and served model version over
// the controller's states and events; robustness curves; the event log. Reads the JSON that other
// modules write (events, traffic log, `attack --json`) without depending on them: core only.
//
//   auto in = report::load_report_inputs({"events.jsonl", "traffic.jsonl", {{"baseline", "a.json"}}});
//   atomic_write_file("report.html", report::render_report(in, {"Run 7"}));
#pragma once

#include "report/chart_data.h"
#include "report/html.h"
#include "report/inputs.h"
#include "report/limits.h"
#include "report/robustness.h"
#include "report/summary.h"
