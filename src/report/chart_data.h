// report/chart_data.h — the data the page's script draws, as one JSON object embedded in the page
// (never JavaScript built from strings). Everything is placed on the traffic log's clock: x is
// seconds since its first line's t = 0.
//
// {"timeline": {"t": [...], "benign_accuracy": [...|null], "attacked_accuracy": [...|null],
//               "flag_rate": [...|null], "version_index": [...|null], "versions": ["1", "2"],
//               "x_max": 120,
//               "phases":  [{"from": 0, "to": 30, "phase": "benign"}, ...],
//               "bands":   [{"from": 41.2, "to": 57, "state": "alarm"}, ...],  (guard.state intervals)
//               "markers": [{"t": 41.2, "kind": "alarm", "label": "alarm (accuracy)"}, ...]},
//  "robustness": [{"norm": "linf", "series": [{"label": "baseline", "attack": "pgd",
//                  "worst_case": false, "points": [[0, 0.92], [0.05, 0.12]]}, ...]}, ...]}
#pragma once

#include <nlohmann/json.hpp>

#include "report/inputs.h"

namespace bulwark::report {

// Event kinds drawn as vertical markers on the timeline.
inline constexpr const char* kMarkerKinds[] = {"alarm", "guard.promoted", "guard.rolled-back"};

nlohmann::json timeline_data(const ReportInputs& in);
nlohmann::json robustness_data(const ReportInputs& in);  // one entry per norm, in order of first use

// {"timeline": timeline_data(in), "robustness": robustness_data(in)}
nlohmann::json chart_data(const ReportInputs& in);

}  // namespace bulwark::report
