// report/detail/threat_rows.h — the rows of a threat report as data: which ATLAS technique each
// check stands for, the mitigation IDs it maps, and the function that judges its evidence
// (threat_mapping.cpp). Private to the report module.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "core/error.h"
#include "report/threat.h"

namespace bulwark::report::detail {

struct RowSpec {
  std::string key, technique;
  std::vector<std::string> mitigations;
  std::string check;
  // Fills the row's evidence lines, verdict, reason and action.
  std::function<void(const ThreatEvidence&, const ThreatPolicy&, ThreatRow&)> judge;
};

const std::vector<RowSpec>& row_specs();

}  // namespace bulwark::report::detail
