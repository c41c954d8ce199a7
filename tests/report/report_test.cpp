// The report module: strict input parsing (numbers checked against a fixture computed by hand;
// every malformed case names file, line and field), escaping, a page that loads nothing from the
// network, the `bulwark report` command, and the page drawn by headless Chromium (its self-check
// read from the DOM, its screenshot decoded and checked for drawn charts).
#include "report/report.h"

#include <gtest/gtest.h>
#include <zlib.h>

#include <cctype>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>

#include "core/error.h"
#include "core/files.h"
#include "report/browser.h"
#include "test_util.h"

namespace bulwark::report {
namespace {

using nlohmann::json;
using testing::TempDir;

constexpr const char* kPayload = "</script><img src=x onerror=alert(1)>";

void write_text(const std::string& path, const std::string& text) { std::ofstream(path, std::ios::binary) << text; }

std::string lines_of(const std::vector<json>& rows) {
  std::string out;
  for (const auto& r : rows) out += r.dump() + "\n";
  return out;
}

// Six seconds starting at unix 1000: benign, benign, pgd x3, benign. Hand-computed summary below.
std::vector<json> traffic_rows() {
  const auto row = [](double t, const char* phase, int sent, int ok, int failed, int bn, int bc, int an, int ac,
                      int flagged, json p50, json p99, const char* version) {
    return json{{"t", t},
                {"time_s", 1000 + t},
                {"phase", phase},
                {"sent", sent},
                {"ok", ok},
                {"failed", failed},
                {"benign_n", bn},
                {"benign_correct", bc},
                {"attacked_n", an},
                {"attacked_correct", ac},
                {"flagged", flagged},
                {"latency_ms_p50", p50},
                {"latency_ms_p99", p99},
                {"model_version", version}};
  };
  return {
      row(0, "benign", 10, 10, 0, 10, 9, 0, 0, 1, 5, 9, "1"), row(1, "benign", 10, 9, 1, 9, 9, 0, 0, 0, 7, 12, "1"),
      row(2, "pgd", 10, 10, 0, 5, 5, 5, 1, 4, 6, 20, "1"),    row(3, "pgd", 10, 10, 0, 5, 4, 5, 0, 5, 8, 30, "1"),
      row(4, "pgd", 10, 8, 2, 4, 4, 4, 3, 1, 10, 15, "2"),    row(5, "benign", 10, 10, 0, 10, 10, 0, 0, 0, 4, 8, "2")};
}

json event(double time_s, const std::string& kind, json details = json::object(), const std::string& detector = "") {
  return json{{"time_s", time_s}, {"time", "x"},         {"kind", kind},      {"detector", detector},
              {"model", "m"},     {"version", "1"},      {"subject", ""},     {"statistic", 12.5},
              {"threshold", 8},   {"window_s", nullptr}, {"details", details}};
}

// Deliberately not in time order (the "serving" state comes second): the reader sorts.
std::vector<json> event_rows() {
  const auto state = [](const char* from, const char* to) { return json{{"from", from}, {"to", to}, {"reason", "r"}}; };
  return {event(1001.5, "alarm", json::object(), "confidence"),
          event(1000.0, "guard.state", state("", "serving")),
          event(1003.25, "alarm", json::object(), "detector_rate"),
          event(1003.25, "guard.state", state("serving", "alarm")),
          event(1003.5, "guard.state", state("alarm", "hardening")),
          event(1004.0, "guard.state", state("hardening", "promoting")),
          event(1004.5, "guard.promoted", {{"version", "2"}}),
          event(1004.5, "guard.state", {{"from", "promoting"}, {"to", "watching"}, {"reason", kPayload}})};
}

json robustness_json(const std::string& norm, double clean, std::vector<std::tuple<const char*, double, double>> rows) {
  json results = json::array();
  std::map<double, double> worst;
  for (const auto& [attack, eps, acc] : rows) {
    results.push_back({{"attack", attack}, {"eps", eps}, {"robust_accuracy", acc}, {"robust", 0}});
    worst[eps] = worst.count(eps) ? std::min(worst[eps], acc) : acc;
  }
  json w = json::array();
  for (const auto& [eps, acc] : worst) w.push_back({{"eps", eps}, {"robust_accuracy", acc}, {"robust", 0}});
  return {{"n", 100},        {"clean_accuracy", clean},    {"norm", norm},
          {"model", "m.pt"}, {"dataset", "fashion-mnist"}, {"results", results},
          {"worst_case", w}, {"warnings", json::array()},  {"seconds", 1.0}};
}

struct Fixture {
  TempDir tmp;
  std::string events = tmp.file("events.jsonl"), traffic = tmp.file("traffic.jsonl");
  std::string baseline = tmp.file("baseline.json"), hardened = tmp.file("hardened.json"), l2 = tmp.file("l2.json");
  Fixture() {
    write_text(events, lines_of(event_rows()));
    write_text(traffic, lines_of(traffic_rows()));
    write_text(baseline,
               robustness_json("linf", 0.92,
                               {{"fgsm", 0.05, 0.29}, {"pgd", 0.05, 0.12}, {"fgsm", 0.1, 0.06}, {"pgd", 0.1, 0.0}})
                   .dump(2));
    write_text(hardened,
               robustness_json("linf", 0.85,
                               {{"fgsm", 0.05, 0.71}, {"pgd", 0.05, 0.66}, {"fgsm", 0.1, 0.55}, {"pgd", 0.1, 0.41}})
                   .dump(2));
    write_text(l2, robustness_json("l2", 0.85, {{"pgd", 0.5, 0.60}, {"pgd", 1.0, 0.31}}).dump(2));
  }
  ReportSources sources() const {
    return {events, traffic, {{"baseline", baseline}, {"hardened", hardened}, {"l2", l2}}};
  }
};

// The message of the bulwark::Error that `f` throws ("" when it throws none).
std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(ReportInputs, SummaryMatchesNumbersComputedByHand) {
  Fixture fx;
  const auto in = load_report_inputs(fx.sources());
  ASSERT_EQ(in.traffic.size(), 6u);
  ASSERT_EQ(in.events.size(), 8u);
  EXPECT_EQ(in.events.front().kind, "guard.state");  // sorted by time
  EXPECT_DOUBLE_EQ(in.traffic_start_unix(), 1000.0);
  const auto s = summarize(in);
  ASSERT_EQ(s.phases.size(), 2u);
  const auto& benign = s.phases[0];
  EXPECT_EQ(benign.phase, "benign");
  EXPECT_EQ(benign.seconds, 3);
  EXPECT_EQ(benign.sent, 30);
  EXPECT_EQ(benign.failed, 1);
  EXPECT_DOUBLE_EQ(*benign.benign_accuracy, 28.0 / 29.0);
  EXPECT_FALSE(benign.attacked_accuracy.has_value());
  EXPECT_DOUBLE_EQ(*benign.flag_rate, 1.0 / 29.0);
  EXPECT_DOUBLE_EQ(*benign.latency_ms_p50, 5.0);  // p50s 4 (w10), 5 (w10), 7 (w9): half of 29 is reached at 5
  EXPECT_DOUBLE_EQ(*benign.latency_ms_p99, 12.0);
  EXPECT_EQ(benign.model_versions, (std::vector<std::string>{"1", "2"}));
  const auto& pgd = s.phases[1];
  EXPECT_EQ(pgd.phase, "pgd");
  EXPECT_EQ(pgd.seconds, 3);
  EXPECT_EQ(pgd.sent, 30);
  EXPECT_EQ(pgd.failed, 2);
  EXPECT_DOUBLE_EQ(*pgd.benign_accuracy, 13.0 / 14.0);
  EXPECT_DOUBLE_EQ(*pgd.attacked_accuracy, 4.0 / 14.0);
  EXPECT_DOUBLE_EQ(*pgd.flag_rate, 10.0 / 28.0);
  EXPECT_DOUBLE_EQ(*pgd.latency_ms_p50, 8.0);
  EXPECT_DOUBLE_EQ(*pgd.latency_ms_p99, 30.0);
  ASSERT_TRUE(s.attack_start_t.has_value());
  EXPECT_DOUBLE_EQ(*s.attack_start_t, 2.0);
  EXPECT_DOUBLE_EQ(*s.time_to_alarm_s, 1.25);     // alarm at 1003.25, attack from 1002
  EXPECT_DOUBLE_EQ(*s.time_to_promotion_s, 2.5);  // guard.promoted at 1004.5
  EXPECT_EQ(s.alarms, 2);
  EXPECT_EQ(s.alarms_before_attack, 1);
  EXPECT_DOUBLE_EQ(s.duration_s, 6.0);
  EXPECT_EQ(s.model_versions, (std::vector<std::string>{"1", "2"}));
  const json j = s.to_json();
  EXPECT_EQ(j["phases"][0]["attacked_accuracy"], nullptr);
  EXPECT_EQ(j["time_to_alarm_s"], 1.25);
}

TEST(ReportInputs, TimelineHasGapsBandsAndMarkersFromGuardEvents) {
  Fixture fx;
  const json tl = timeline_data(load_report_inputs(fx.sources()));
  EXPECT_EQ(tl["attacked_accuracy"][0], nullptr);  // no attacked inputs: a gap, not 0
  EXPECT_DOUBLE_EQ(tl["attacked_accuracy"][2].get<double>(), 0.2);
  EXPECT_EQ(tl["version_index"], json({0, 0, 0, 0, 1, 1}));
  EXPECT_EQ(tl["versions"], json({"1", "2"}));
  EXPECT_EQ(tl["x_max"], 6.0);
  const json bands = json::array({{{"from", 0.0}, {"to", 3.25}, {"state", "serving"}},
                                  {{"from", 3.25}, {"to", 3.5}, {"state", "alarm"}},
                                  {{"from", 3.5}, {"to", 4.0}, {"state", "hardening"}},
                                  {{"from", 4.0}, {"to", 4.5}, {"state", "promoting"}},
                                  {{"from", 4.5}, {"to", 6.0}, {"state", "watching"}}});
  EXPECT_EQ(tl["bands"], bands);
  ASSERT_EQ(tl["markers"].size(), 3u);
  EXPECT_EQ(tl["markers"][0]["t"], 1.5);
  EXPECT_EQ(tl["markers"][2]["label"], "promoted v2");
  EXPECT_EQ(tl["markers"][2]["served_from"], 4.0);  // promoted at 4.5, in the second [4, 5) that version 2 answered
  EXPECT_EQ(tl["phases"], json::array({{{"from", 0.0}, {"to", 2.0}, {"phase", "benign"}},
                                       {{"from", 2.0}, {"to", 5.0}, {"phase", "pgd"}},
                                       {{"from", 5.0}, {"to", 6.0}, {"phase", "benign"}}}));
}

// One numbering: the loop's "promoted v5" is the registry's version 5, and the traffic's
// model-version axis names the same number once the server answers with it. Events and traffic
// that disagree (a server counting its own loads would have said "2") are said so on the marker.
TEST(ReportInputs, PromotionMarkersMeetTheRegistryVersionOnTheVersionAxis) {
  Fixture fx;
  auto rows = traffic_rows();
  for (auto& r : rows) r["model_version"] = r["model_version"] == "1" ? "4" : "5";  // registry numbers
  auto events = event_rows();
  for (auto& e : events) {
    if (e["kind"] == "guard.promoted") e["details"]["version"] = "5";
  }
  write_text(fx.traffic, lines_of(rows));
  write_text(fx.events, lines_of(events));
  const json tl = timeline_data(load_report_inputs(fx.sources()));
  EXPECT_EQ(tl["versions"], json({"4", "5"}));
  const auto promoted = tl["markers"][2];
  EXPECT_EQ(promoted["label"], "promoted v5");
  EXPECT_EQ(promoted["version"], "5");
  EXPECT_EQ(promoted["served_from"], 4.0);

  for (auto& e : events) {
    if (e["kind"] == "guard.promoted") e["details"]["version"] = "2";
  }
  write_text(fx.events, lines_of(events));
  const auto mismatched = timeline_data(load_report_inputs(fx.sources()))["markers"][2];
  EXPECT_EQ(mismatched["label"], "promoted v2 (never answered in this traffic)");
  EXPECT_EQ(mismatched["served_from"], nullptr);
}

TEST(ReportInputs, RobustnessCurvesStartAtCleanAccuracyAndGroupByNorm) {
  Fixture fx;
  const json groups = robustness_data(load_report_inputs(fx.sources()));
  ASSERT_EQ(groups.size(), 2u);
  EXPECT_EQ(groups[0]["norm"], "linf");
  EXPECT_EQ(groups[1]["norm"], "l2");
  ASSERT_EQ(groups[0]["series"].size(), 6u);  // (baseline, hardened) x (fgsm, pgd, worst case)
  const json& pgd = groups[0]["series"][1];
  EXPECT_EQ(pgd["label"], "baseline");
  EXPECT_EQ(pgd["attack"], "pgd");
  EXPECT_EQ(pgd["points"], json::array({{0.0, 0.92}, {0.05, 0.12}, {0.1, 0.0}}));
  EXPECT_EQ(groups[0]["series"][2]["worst_case"], true);
  EXPECT_EQ(groups[1]["series"].size(), 1u);  // one attack: no separate worst-case line
  EXPECT_EQ(expected_chart_count(load_report_inputs(fx.sources())), 3);
}

struct BadCase {
  std::string name;
  std::function<void(std::vector<json>&)> mutate;  // applied to the rows
  int line;                                        // expected in the message
  std::string field;                               // expected in the message ("" for whole-line errors)
};

TEST(ReportInputs, MalformedTrafficNamesFileLineAndField) {
  const std::vector<BadCase> cases = {
      {"missing phase", [](auto& r) { r[2].erase("phase"); }, 3, "field 'phase' is missing"},
      {"negative count", [](auto& r) { r[0]["sent"] = -1; }, 1, "field 'sent' must be an integer >= 0"},
      {"fractional count", [](auto& r) { r[1]["ok"] = 3.5; }, 2, "field 'ok'"},
      {"correct > n", [](auto& r) { r[3]["attacked_correct"] = 9; }, 4, "field 'attacked_correct' exceeds"},
      {"t not increasing", [](auto& r) { r[4]["t"] = 3; }, 5, "field 't' must increase"},
      {"latency string", [](auto& r) { r[5]["latency_ms_p50"] = "fast"; }, 6, "field 'latency_ms_p50'"},
      {"latency missing", [](auto& r) { r[5].erase("latency_ms_p99"); }, 6, "field 'latency_ms_p99' is missing"},
      {"ok + failed > sent", [](auto& r) { r[0]["failed"] = 5; }, 1, "field 'failed'"},
      {"version not string", [](auto& r) { r[1]["model_version"] = 2; }, 2, "field 'model_version'"},
      {"not an object",
       [](auto& r) {
         r[1] = json::array({1, 2});
       },
       2, "must be a JSON object"},
  };
  for (const auto& c : cases) {
    TempDir tmp;
    auto rows = traffic_rows();
    c.mutate(rows);
    const std::string path = tmp.file("traffic.jsonl");
    write_text(path, lines_of(rows));
    const std::string msg = error_of([&] { load_traffic(path); });
    EXPECT_NE(msg.find(path + ":" + std::to_string(c.line) + ": "), std::string::npos) << c.name << ": " << msg;
    EXPECT_NE(msg.find(c.field), std::string::npos) << c.name << ": " << msg;
  }
  TempDir tmp;
  const std::string path = tmp.file("t.jsonl");
  write_text(path, traffic_rows()[0].dump() + "\n{\"t\": 1,\n");
  EXPECT_NE(error_of([&] { load_traffic(path); }).find(path + ":2: not valid JSON"), std::string::npos);
  write_text(path, traffic_rows()[0].dump() + "\n\n" + traffic_rows()[1].dump() + "\n");
  EXPECT_NE(error_of([&] { load_traffic(path); }).find(path + ":2: empty line"), std::string::npos);
  write_text(path, traffic_rows()[0].dump() + "\n{\"t\": 1, \"ti");  // cut off mid-write
  EXPECT_NE(error_of([&] { load_traffic(path); }).find("still being written"), std::string::npos);
}

TEST(ReportInputs, MalformedEventsNameFileLineAndField) {
  const std::vector<BadCase> cases = {
      {"missing time_s", [](auto& r) { r[0].erase("time_s"); }, 1, "field 'time_s' is missing"},
      {"null time_s", [](auto& r) { r[1]["time_s"] = nullptr; }, 2, "field 'time_s' must be a number"},
      {"empty kind", [](auto& r) { r[2]["kind"] = ""; }, 3, "field 'kind' must not be empty"},
      {"details array", [](auto& r) { r[3]["details"] = json::array(); }, 4, "field 'details' must be an object"},
      {"guard.state without to", [](auto& r) { r[4]["details"].erase("to"); }, 5, "field 'details.to'"},
      {"statistic string", [](auto& r) { r[5]["statistic"] = "high"; }, 6, "field 'statistic' must be a number"},
      {"detector number", [](auto& r) { r[6]["detector"] = 3; }, 7, "field 'detector' must be a string"},
  };
  for (const auto& c : cases) {
    TempDir tmp;
    auto rows = event_rows();
    c.mutate(rows);
    const std::string path = tmp.file("events.jsonl");
    write_text(path, lines_of(rows));
    const std::string msg = error_of([&] { load_events(path); });
    EXPECT_NE(msg.find(path + ":" + std::to_string(c.line) + ": "), std::string::npos) << c.name << ": " << msg;
    EXPECT_NE(msg.find(c.field), std::string::npos) << c.name << ": " << msg;
  }
}

TEST(ReportInputs, MalformedRobustnessNamesFileAndField) {
  TempDir tmp;
  const std::string path = tmp.file("r.json");
  const json good = robustness_json("linf", 0.9, {{"pgd", 0.05, 0.2}, {"pgd", 0.1, 0.1}});
  const std::vector<std::pair<std::function<void(json&)>, std::string>> cases = {
      {[](json& j) { j.erase("clean_accuracy"); }, "field 'clean_accuracy' is missing"},
      {[](json& j) { j["results"][1]["eps"] = -0.1; }, "field 'results[1].eps' must be >= 0"},
      {[](json& j) { j["results"][0]["robust_accuracy"] = 1.5; },
       "field 'results[0].robust_accuracy' must be in [0, 1]"},
      {[](json& j) { j["results"][1]["eps"] = 0.05; }, "field 'results[1].eps' repeats eps"},
      {[](json& j) { j["results"] = json::array(); }, "field 'results' must not be empty"},
      {[](json& j) { j["worst_case"][0].erase("eps"); }, "field 'worst_case[0].eps' is missing"},
  };
  for (const auto& [mutate, expected] : cases) {
    json j = good;
    mutate(j);
    write_text(path, j.dump());
    const std::string msg = error_of([&] { load_robustness("x", path); });
    EXPECT_NE(msg.find(path + ": " + expected), std::string::npos) << msg;
  }
  write_text(path, "{\"n\": 1,");
  EXPECT_NE(error_of([&] { load_robustness("x", path); }).find(path + ": not valid JSON"), std::string::npos);
}

TEST(ReportInputs, MissingEmptyOversizedAndDuplicateInputsAreRefused) {
  Fixture fx;
  const std::string missing = fx.tmp.file("nope.jsonl"), empty = fx.tmp.file("empty.jsonl");
  write_text(empty, "");
  EXPECT_NE(error_of([&] { load_events(missing); }).find("events file " + missing + " does not exist"),
            std::string::npos);
  EXPECT_NE(error_of([&] { load_traffic(empty); }).find("traffic file " + empty + " is empty"), std::string::npos);
  const std::string big = fx.tmp.file("big.jsonl");
  write_text(big, "x");
  std::filesystem::resize_file(big, kMaxInputBytes + 1);  // sparse: no disk used
  EXPECT_NE(error_of([&] { load_events(big); }).find("read at most 268435456"), std::string::npos);
  const std::string many = fx.tmp.file("many.jsonl");
  {
    std::ofstream out(many);
    for (int64_t i = 0; i <= kMaxInputLines; ++i) out << "{\"time_s\":1,\"kind\":\"a\"}\n";
  }
  EXPECT_NE(error_of([&] { load_events(many); }).find("more than 1000000 lines"), std::string::npos);
  auto dup = fx.sources();
  dup.robustness.push_back({"baseline", fx.hardened});
  EXPECT_NE(error_of([&] { load_report_inputs(dup); }).find("'baseline' is given twice"), std::string::npos);
  EXPECT_NE(error_of([] { parse_labelled_path("baseline"); }).find("LABEL=PATH"), std::string::npos);
  EXPECT_EQ(parse_labelled_path("a=b=c.json"), (std::pair<std::string, std::string>{"a", "b=c.json"}));
}

// Occurrences of `needle` in `text`, ignoring ASCII case.
size_t count_icase(std::string text, const std::string& needle) {
  for (auto& c : text) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  size_t n = 0;
  for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) ++n;
  return n;
}

// The page without the contents of its <script> elements: the markup and styles a browser reads.
std::string without_scripts(const std::string& html) {
  std::string out;
  size_t at = 0;
  for (size_t open; (open = html.find("<script", at)) != std::string::npos;) {
    const size_t close = html.find("</script>", open);
    out += html.substr(at, open - at);
    at = close == std::string::npos ? html.size() : close + 9;
  }
  return out + html.substr(std::min(at, html.size()));
}

TEST(ReportHtml, EscapesEventTextAndTitle) {
  Fixture fx;
  auto rows = event_rows();
  rows.push_back(event(1002.5, "alarm", {{"note", kPayload}}, kPayload));  // detector text reaches the chart data
  write_text(fx.events, lines_of(rows));
  RenderOptions opt;
  opt.title = std::string("Run <7> ") + kPayload;
  const std::string html = render_report(load_report_inputs(fx.sources()), opt);
  EXPECT_EQ(html.find(kPayload), std::string::npos);
  EXPECT_EQ(html.find("<img"), std::string::npos);
  EXPECT_NE(html.find("&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;"), std::string::npos);  // title, table
  EXPECT_NE(html.find("\\u003c/script\\u003e\\u003cimg"), std::string::npos);                    // data block
  // Exactly the page's own four script elements open and close: nothing from the data ends one.
  EXPECT_EQ(count_icase(html, "</script"), 4u);
  EXPECT_EQ(count_icase(html, "<!--"), 0u);
  EXPECT_EQ(json_for_script(json{{"a", "</b><!--&"}}), "{\"a\":\"\\u003c/b\\u003e\\u003c!--\\u0026\"}");
  EXPECT_EQ(json::parse(json_for_script(json{{"a", "</b><!--&"}}))["a"], "</b><!--&");
}

TEST(ReportHtml, IsSelfContainedAndNamesChartJsVersion) {
  Fixture fx;
  const std::string html = render_report(load_report_inputs(fx.sources()));
  EXPECT_EQ(html.find("http://"), std::string::npos);
  EXPECT_EQ(html.find("https://"), std::string::npos);
  // No tag with an attribute or element that could fetch anything, no style rule that could.
  const std::string markup = without_scripts(html);
  const std::regex fetching_tag(
      R"(^<(link|iframe|img|object|embed|frame|source|video|audio)\b|\s(src|href|srcset|action|poster|data|background|formaction)\s*=)",
      std::regex::icase);
  int tags = 0;
  for (size_t open = markup.find('<'); open != std::string::npos; open = markup.find('<', open + 1)) {
    const std::string tag = markup.substr(open, markup.find('>', open) - open + 1);
    ++tags;
    EXPECT_FALSE(std::regex_search(tag, fetching_tag)) << tag;
  }
  EXPECT_GT(tags, 100);
  const std::regex fetching_style(R"(url\s*\(|@import)", std::regex::icase);
  EXPECT_FALSE(std::regex_search(markup, fetching_style));
  EXPECT_TRUE(std::regex_match(std::string(chart_js_version()), std::regex(R"(\d+\.\d+\.\d+)")));
  EXPECT_NE(html.find("Chart.js " + std::string(chart_js_version())), std::string::npos);
  EXPECT_GT(html.size(), 150000u);  // Chart.js itself is inline
  EXPECT_NE(html.find("data-charts-expected=\"3\""), std::string::npos);
}

TEST(ReportCli, WritesThePageAndPrintsTheSummary) {
  Fixture fx;
  const std::string out = fx.tmp.file("report.html");
  const std::string args = " report --events " + fx.events + " --traffic " + fx.traffic +
                           " --robustness baseline=" + fx.baseline + " --robustness hardened=" + fx.hardened +
                           " --out " + out;
  const auto r = testing::run_command(std::string(BULWARK_BIN) + " --json" + args);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const json j = json::parse(r.output);
  EXPECT_EQ(j["time_to_alarm_s"], 1.25);
  EXPECT_EQ(j["charts"], 2);
  EXPECT_EQ(j["out"], out);
  EXPECT_EQ(std::filesystem::file_size(out), j["bytes"].get<uint64_t>());
  const auto human = testing::run_command(std::string(BULWARK_BIN) + args);
  ASSERT_EQ(human.exit_code, 0) << human.output;
  EXPECT_NE(human.output.find("wrote " + out), std::string::npos);
  EXPECT_NE(human.output.find("time to alarm"), std::string::npos);
  EXPECT_NE(human.output.find("92.9%"), std::string::npos);  // pgd phase, benign accuracy 13/14

  const std::string out2 = fx.tmp.file("bad.html");
  const auto usage = testing::run_command(std::string(BULWARK_BIN) + " report --events " + fx.events + " --traffic " +
                                          fx.traffic + " --robustness nolabel --out " + out2);
  EXPECT_EQ(usage.exit_code, 2) << usage.output;
  const auto missing = testing::run_command(std::string(BULWARK_BIN) + " report --events " + fx.tmp.file("none") +
                                            " --traffic " + fx.traffic + " --out " + out2);
  EXPECT_EQ(missing.exit_code, 1) << missing.output;
  EXPECT_NE(missing.output.find(fx.tmp.file("none")), std::string::npos) << missing.output;
  EXPECT_FALSE(std::filesystem::exists(out2));
}

// --- headless Chromium -------------------------------------------------------------------------

struct Image {
  uint32_t width = 0, height = 0;
  std::vector<uint8_t> rgb;  // width * height * 3
};

uint32_t be32(const std::string& s, size_t at) {
  return (uint32_t(uint8_t(s[at])) << 24) | (uint32_t(uint8_t(s[at + 1])) << 16) | (uint32_t(uint8_t(s[at + 2])) << 8) |
         uint32_t(uint8_t(s[at + 3]));
}

// Decodes an 8-bit RGB or RGBA, non-interlaced PNG (what Chromium writes): chunks, zlib, filters.
Image decode_png(const std::string& bytes) {
  if (bytes.size() < 33 || bytes.compare(0, 8, "\x89PNG\r\n\x1a\n") != 0) throw std::runtime_error("not a PNG");
  Image img;
  int channels = 0;
  std::string idat;
  for (size_t at = 8; at + 12 <= bytes.size();) {
    const uint32_t len = be32(bytes, at);
    const std::string type = bytes.substr(at + 4, 4);
    if (type == "IHDR") {
      img.width = be32(bytes, at + 8), img.height = be32(bytes, at + 12);
      const int depth = uint8_t(bytes[at + 16]), color = uint8_t(bytes[at + 17]), interlace = uint8_t(bytes[at + 20]);
      if (depth != 8 || (color != 2 && color != 6) || interlace != 0)
        throw std::runtime_error("unsupported PNG layout");
      channels = color == 6 ? 4 : 3;
    } else if (type == "IDAT") {
      idat += bytes.substr(at + 8, len);
    }
    at += 12 + len;
  }
  const size_t stride = size_t(img.width) * channels;
  std::vector<uint8_t> raw((stride + 1) * img.height);
  uLongf raw_len = raw.size();
  if (uncompress(raw.data(), &raw_len, reinterpret_cast<const Bytef*>(idat.data()), idat.size()) != Z_OK ||
      raw_len != raw.size()) {
    throw std::runtime_error("PNG data does not inflate to its size");
  }
  std::vector<uint8_t> prev(stride, 0), cur(stride);
  img.rgb.reserve(size_t(img.width) * img.height * 3);
  for (uint32_t y = 0; y < img.height; ++y) {
    const uint8_t filter = raw[y * (stride + 1)];
    const uint8_t* in = &raw[y * (stride + 1) + 1];
    for (size_t i = 0; i < stride; ++i) {
      const int a = i >= size_t(channels) ? cur[i - channels] : 0, b = prev[i],
                c = i >= size_t(channels) ? prev[i - channels] : 0;
      int pred = 0;
      if (filter == 1)
        pred = a;
      else if (filter == 2)
        pred = b;
      else if (filter == 3)
        pred = (a + b) / 2;
      else if (filter == 4) {
        const int p = a + b - c, pa = std::abs(p - a), pb = std::abs(p - b), pc = std::abs(p - c);
        pred = (pa <= pb && pa <= pc) ? a : (pb <= pc ? b : c);
      }
      cur[i] = uint8_t(in[i] + pred);
    }
    for (uint32_t x = 0; x < img.width; ++x) img.rgb.insert(img.rgb.end(), &cur[x * channels], &cur[x * channels] + 3);
    prev.swap(cur);
  }
  return img;
}

using test::body_attr;
using test::chromium;

TEST(ReportBrowser, ChromiumDrawsEveryChartWithoutErrors) {
  ASSERT_EQ(std::system("command -v chromium >/dev/null 2>&1"), 0)
      << "chromium is not installed: `make deps` installs it (it is in the Makefile's DEB_PACKAGES)";
  Fixture fx;
  const std::string page = fx.tmp.file("report.html");
  atomic_write_file(page, render_report(load_report_inputs(fx.sources())));

  const auto dom = chromium(fx.tmp, "--dump-dom", page);
  ASSERT_EQ(dom.exit_code, 0) << "chromium --dump-dom failed (124: timed out)\n"
                              << read_file(fx.tmp.file("chromium.log"));
  EXPECT_EQ(body_attr(dom.output, "data-charts-expected"), "3");
  EXPECT_EQ(body_attr(dom.output, "data-charts-drawn"), "3");
  EXPECT_EQ(body_attr(dom.output, "data-errors"), "0");

  const std::string png = fx.tmp.file("shot.png");
  const auto shot = chromium(fx.tmp, "--screenshot=" + png + " --window-size=1400,2400", page);
  ASSERT_EQ(shot.exit_code, 0) << read_file(fx.tmp.file("chromium.log"));
  const Image img = decode_png(read_file(png));
  ASSERT_EQ(img.width, 1400u);
  std::map<uint32_t, int64_t> colors;
  int64_t saturated = 0;
  for (size_t i = 0; i < img.rgb.size(); i += 3) {
    const int r = img.rgb[i], g = img.rgb[i + 1], b = img.rgb[i + 2];
    ++colors[(r << 16) | (g << 8) | b];
    saturated += std::max({r, g, b}) - std::min({r, g, b}) > 80;  // chart lines, bands, markers; text is grey
  }
  const int64_t pixels = int64_t(img.width) * img.height;
  int64_t background = 0;
  for (const auto& [c, n] : colors) background = std::max(background, n);
  std::cout << "screenshot " << img.width << "x" << img.height << ": " << 100.0 * (pixels - background) / pixels
            << "% off the background, " << colors.size() << " colours, " << saturated << " saturated pixels\n";
  // A page whose charts did not draw still has its tables and text (about 5% off the background,
  // a few hundred grey shades) but no saturated pixel at all.
  EXPECT_GT(pixels - background, pixels * 8 / 100) << "screenshot is mostly one colour";
  EXPECT_GT(colors.size(), 200u);
  EXPECT_GT(saturated, 5000) << "no coloured chart pixels in the screenshot";
}

}  // namespace
}  // namespace bulwark::report
