// report/detail/assets.h — the text the page inlines, generated at build time from files
// (embed_asset.cmake): the binary needs neither the Chart.js package nor the source tree to run.
#pragma once

namespace bulwark::report::detail {

extern const char kChartJs[];         // Chart.js UMD build, minified (Debian libjs-chart.js)
extern const char kChartJsVersion[];  // "3.9.1", from its banner
extern const char kPageJs[];          // src/report/page.js: draws the charts, then checks them
extern const char kPageCss[];         // src/report/page.css
extern const char kThreatPageJs[];    // src/report/threat_page.js: the threat page's charts and self-check
// third_party/atlas/ATLAS.yaml: parsed by report/atlas.cpp, never placed in a page as it is.
extern const char kAtlasYaml[];

}  // namespace bulwark::report::detail
