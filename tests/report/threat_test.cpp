// The threat page (report module): every ATLAS ID it shows exists in the vendored data, the
// mapping's "listed by ATLAS" flags agree with the data, verdicts against the policy (fail under a
// threshold, missing without evidence, warn for FGSM only), a policy with a bad key or value
// refused naming it, the JSON valid against docs/schemas/threat-report.schema.json (checked by
// python3-jsonschema, shown to reject a broken document), escaping, and the page drawn by headless
// Chromium with no errors and every row present.
#include "report/threat.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <functional>
#include <regex>
#include <set>

#include "core/error.h"
#include "core/files.h"
#include "report/atlas.h"
#include "report/browser.h"
#include "report/html.h"
#include "test_util.h"

namespace bulwark::report {
namespace {

using nlohmann::json;
using testing::TempDir;

const std::string kRepo = std::string(BULWARK_FIXTURES_DIR) + "/../..";
constexpr const char* kPayload = "</script><img src=x onerror=alert(1)>";

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

// Evidence on which every check passes under the default policy.
ThreatEvidence passing_evidence() {
  ThreatEvidence e;
  e.registry = "reg";
  e.model = "fashion@2";
  e.requested = "fashion@production";
  e.stage = "production";
  e.model_sha256 = std::string(64, 'a');
  e.files = {{"model.pt", std::string(64, 'a')}, {"model.detect", std::string(64, 'b')}};
  e.integrity = {true, "82834f03a6697f7b", true, "", true, "", 9, 0, true, true};
  e.lineage = {"fashion-mnist", std::string(64, 'c'), "pgd-at", 0.1, 1};
  e.gate = {0.86, 0.52};
  AttackEvidence a;
  a.run = {"0123456789abcdef", "attack", "2026-05-01T10:00:00.000Z"};
  a.norm = "linf";
  a.n = 1000;
  a.clean_accuracy = 0.87;
  a.attacks = {"pgd", "square"};
  a.results = {{"pgd", 0.05, 0.71}, {"square", 0.05, 0.73}, {"pgd", 0.1, 0.55}, {"square", 0.1, 0.58}};
  a.worst_case = {{0.05, 0.69}, {0.1, 0.52}};
  e.attack = a;
  e.detection = DetectionEvidence{{"aa11", "detect-evaluate", "t"}, 0.01, {{"pgd", 0.1, 0.82, 0.012}}, 0.3};
  e.privacy = PrivacyEvidence{{"bb22", "privacy-audit", "t"},
                              {{"loss.auc", 0.52},
                               {"loss.tpr_at_0_1pct_fpr", 0.002},
                               {"loss.tpr_at_1pct_fpr", 0.012},
                               {"lira.auc", 0.55},
                               {"lira.tpr_at_0_1pct_fpr", 0.004},
                               {"lira.tpr_at_1pct_fpr", 0.02}}};
  e.poison = PoisonEvidence{{"cc33", "poison-scan", "t"}, 0, 0, false};
  ServeEvidence s;
  s.config_path = "serve.yaml";
  s.served_as = {"fashion"};
  s.auth = true;
  s.tokens = {{"dashboard", {"infer", "admin"}, 50}};
  s.tls = true;
  s.stateful = "block";
  s.extraction = "throttle";
  s.calibration = true;
  s.calibration_source = "model.detect in the registry version";
  s.events = true;
  e.serve = s;
  return e;
}

const ThreatRow& row(const ThreatReport& r, const std::string& key) {
  for (const auto& x : r.rows) {
    if (x.key == key) return x;
  }
  throw std::runtime_error("no row " + key);
}

// The JSON the page carries in its data block.
json page_data(const std::string& html) {
  const std::string open = "<script type=\"application/json\" id=\"threat-data\">";
  const size_t at = html.find(open);
  if (at == std::string::npos) throw std::runtime_error("no data block");
  const size_t from = at + open.size();
  return json::parse(html.substr(from, html.find("</script>", from) - from));
}

TEST(ThreatAtlas, EmbeddedDataIsTheVendoredFile) {
  const auto& atlas = AtlasCatalog::embedded();
  const auto file = AtlasCatalog::parse(read_file(kRepo + "/third_party/atlas/ATLAS.yaml"), "ATLAS.yaml");
  EXPECT_EQ(atlas.version(), file.version());
  EXPECT_EQ(atlas.technique_count(), file.technique_count());
  EXPECT_EQ(atlas.mitigation_count(), file.mitigation_count());
  // The vendored release (third_party/atlas/README.md).
  EXPECT_EQ(atlas.version(), "5.6.0");
  ASSERT_NE(atlas.technique("AML.T0024.000"), nullptr);
  EXPECT_EQ(atlas.technique("AML.T0024.000")->parent, "AML.T0024");
  EXPECT_EQ(atlas.full_name("AML.T0024.002"), "Exfiltration via AI Inference API: Extract AI Model");
  EXPECT_EQ(atlas.technique("AML.T9999"), nullptr);
  EXPECT_NE(error_of([] {
              AtlasCatalog::parse("version: 1\nmatrices: [{techniques: [{name: x}]}]", "bad.yaml");
            }).find("bad.yaml: matrices[0].techniques[0]: 'id' is missing"),
            std::string::npos);
}

TEST(ThreatAtlas, EveryIdOnThePageExistsInTheData) {
  const auto& atlas = AtlasCatalog::embedded();
  const auto report = assess_threat(passing_evidence(), ThreatPolicy{});
  const std::string html = render_threat_html(report);
  const json data = page_data(html);
  ASSERT_EQ(data["rows"].size(), 9u);
  std::set<std::string> techniques;
  for (const auto& r : data["rows"]) {
    const std::string id = r["technique"]["id"];
    techniques.insert(id);
    ASSERT_NE(atlas.technique(id), nullptr) << id;
    EXPECT_EQ(r["technique"]["name"], atlas.full_name(id));
    for (const auto& m : r["mitigations"]) {
      ASSERT_NE(atlas.mitigation(m["id"]), nullptr) << m["id"];
      EXPECT_EQ(m["name"], atlas.mitigation(m["id"])->name);
      EXPECT_EQ(m["listed_by_atlas"].get<bool>(), atlas.lists(m["id"], id)) << m["id"] << " for " << id;
    }
  }
  for (const char* id :
       {"AML.T0043", "AML.T0015", "AML.T0020", "AML.T0024", "AML.T0024.000", "AML.T0024.002", "AML.T0010"}) {
    EXPECT_TRUE(techniques.count(id)) << id << " is not mapped";
  }
  // Any ATLAS-shaped ID anywhere in the page, data block included, is one the data knows.
  const std::regex any_id(R"(AML\.(T\d{4}(\.\d{3})?|M\d{4}))");
  int seen = 0;
  for (auto it = std::sregex_iterator(html.begin(), html.end(), any_id); it != std::sregex_iterator(); ++it, ++seen) {
    const std::string id = it->str();
    EXPECT_TRUE(atlas.technique(id) != nullptr || atlas.mitigation(id) != nullptr) << id;
  }
  EXPECT_GT(seen, 40);
  EXPECT_EQ(data["atlas"]["version"], atlas.version());
}

TEST(ThreatAtlas, MitigationsNotListedForTheTechniqueAreMarkedOurs) {
  const auto report = assess_threat(passing_evidence(), ThreatPolicy{});
  const auto find = [&](const std::string& key, const std::string& m) {
    for (const auto& x : row(report, key).mitigations) {
      if (x.id == m) return x;
    }
    throw std::runtime_error(m + " not in " + key);
  };
  // Facts of ATLAS 5.6.0: M0015 is listed for both evasion techniques, M0004 for model extraction,
  // M0013 only for the supply-chain sub-techniques (Model, AI Software), not for AML.T0010 itself.
  EXPECT_TRUE(find("detection", "AML.M0015").listed);
  EXPECT_TRUE(find("query-crafting", "AML.M0015").listed);
  EXPECT_TRUE(find("extraction", "AML.M0004").listed);
  EXPECT_TRUE(find("access", "AML.M0019").listed);
  EXPECT_FALSE(find("integrity", "AML.M0013").listed);
  EXPECT_TRUE(
      std::set<std::string>({"AML.T0010.001", "AML.T0010.003"}).count(find("integrity", "AML.M0013").listed_for));
  const std::string html = render_threat_html(report);
  EXPECT_NE(html.find("our mapping: ATLAS lists it for AML.T0010."), std::string::npos);
}

TEST(ThreatVerdicts, PassingEvidencePassesEveryCheck) {
  const auto r = assess_threat(passing_evidence(), ThreatPolicy{});
  for (const auto& x : r.rows) {
    EXPECT_EQ(x.verdict, Verdict::kPass) << x.key << ": " << x.reason;
    EXPECT_TRUE(x.action.empty()) << x.key;
  }
  EXPECT_EQ(r.overall(), Verdict::kPass);
}

TEST(ThreatVerdicts, RobustAccuracyUnderTheThresholdFails) {
  auto e = passing_evidence();
  e.attack->worst_case[0.1] = 0.35;  // under the default 0.4
  const auto r = assess_threat(e, ThreatPolicy{});
  const auto& robust = row(r, "robustness");
  EXPECT_EQ(robust.verdict, Verdict::kFail);
  EXPECT_NE(robust.reason.find("35.0%"), std::string::npos) << robust.reason;
  EXPECT_NE(robust.reason.find("evasion.min_robust_accuracy"), std::string::npos);
  EXPECT_NE(robust.action.find("bulwark harden"), std::string::npos);
  EXPECT_EQ(r.overall(), Verdict::kFail);
  // The policy moves the line: at 0.3 the same evidence passes; judged at eps 0.05 it passes too.
  EXPECT_EQ(
      row(assess_threat(e, ThreatPolicy::parse("evasion: {min_robust_accuracy: 0.3}", "p.yaml")), "robustness").verdict,
      Verdict::kPass);
  EXPECT_EQ(row(assess_threat(e, ThreatPolicy::parse("evasion: {eps: 0.05}", "p.yaml")), "robustness").verdict,
            Verdict::kPass);
  const auto& unevaluated = row(assess_threat(e, ThreatPolicy::parse("evasion: {eps: 0.2}", "p.yaml")), "robustness");
  EXPECT_EQ(unevaluated.verdict, Verdict::kMissing);
  EXPECT_NE(unevaluated.reason.find("did not evaluate evasion.eps = 0.2"), std::string::npos);
}

TEST(ThreatVerdicts, OnlyFgsmWarnsThatStrongAttacksAreNeeded) {
  auto e = passing_evidence();
  e.attack->attacks = {"fgsm"};
  e.attack->results = {{"fgsm", 0.1, 0.6}};
  e.attack->worst_case = {{0.1, 0.6}};
  const auto& r = row(assess_threat(e, ThreatPolicy{}), "robustness");
  EXPECT_EQ(r.verdict, Verdict::kWarn);
  EXPECT_NE(r.reason.find("robustness claims need strong attacks"), std::string::npos);
  EXPECT_NE(r.action.find("--attacks auto"), std::string::npos);
}

TEST(ThreatVerdicts, NoEvidenceIsMissingNeverAPass) {
  auto e = passing_evidence();
  e.attack.reset();
  e.gate = {};
  e.detection.reset();
  e.privacy.reset();
  e.poison.reset();
  e.serve.reset();
  e.lineage = {};
  const auto r = assess_threat(e, ThreatPolicy{});
  for (const char* key :
       {"robustness", "detection", "membership", "poisoning", "access", "query-crafting", "extraction", "provenance"}) {
    EXPECT_EQ(row(r, key).verdict, Verdict::kMissing) << key;
    EXPECT_FALSE(row(r, key).action.empty()) << key;
  }
  EXPECT_EQ(row(r, "integrity").verdict, Verdict::kPass);
  EXPECT_EQ(r.overall(), Verdict::kMissing);
}

TEST(ThreatVerdicts, EachCheckFailsOnItsOwnEvidence) {
  const auto verdict_of = [](const std::string& key, const std::function<void(ThreatEvidence&)>& change) {
    auto e = passing_evidence();
    change(e);
    return row(assess_threat(e, ThreatPolicy{}), key).verdict;
  };
  EXPECT_EQ(verdict_of("integrity", [](auto& e) { e.integrity.verified = false; }), Verdict::kFail);
  EXPECT_EQ(verdict_of("integrity", [](auto& e) { e.integrity.audit_ok = false; }), Verdict::kFail);
  EXPECT_EQ(verdict_of("integrity", [](auto& e) { e.integrity.audit_files_match = false; }), Verdict::kFail);
  EXPECT_EQ(verdict_of("integrity", [](auto& e) { e.integrity.is_signed = false; }), Verdict::kFail);
  EXPECT_EQ(verdict_of("integrity", [](auto& e) { e.integrity.audit_uncovered = 2; }), Verdict::kWarn);
  EXPECT_EQ(verdict_of("provenance", [](auto& e) { e.lineage.dataset_sha256.clear(); }), Verdict::kWarn);
  EXPECT_EQ(verdict_of("detection", [](auto& e) { e.detection->results[0].tpr = 0.3; }), Verdict::kFail);
  EXPECT_EQ(verdict_of("detection", [](auto& e) { e.detection->results[0].fpr = 0.2; }), Verdict::kWarn);
  EXPECT_EQ(verdict_of("detection", [](auto& e) { e.serve->calibration = false; }), Verdict::kWarn);
  EXPECT_EQ(verdict_of("membership", [](auto& e) { e.privacy->metrics["lira.tpr_at_0_1pct_fpr"] = 0.08; }),
            Verdict::kFail);
  EXPECT_EQ(verdict_of("membership",
                       [](auto& e) {
                         e.privacy->metrics.erase("lira.auc");
                         e.privacy->metrics.erase("lira.tpr_at_0_1pct_fpr");
                         e.privacy->metrics.erase("lira.tpr_at_1pct_fpr");
                       }),
            Verdict::kWarn);
  EXPECT_EQ(verdict_of("poisoning", [](auto& e) { e.poison->failed = true; }), Verdict::kFail);
  EXPECT_EQ(verdict_of("poisoning", [](auto& e) { e.poison->flagged_classes = 1; }), Verdict::kFail);
  EXPECT_EQ(verdict_of("access",
                       [](auto& e) {
                         e.serve->auth = false;
                         e.serve->tokens.clear();
                       }),
            Verdict::kFail);
  EXPECT_EQ(verdict_of("access", [](auto& e) { e.serve->tokens[0].rate_per_s = 0; }), Verdict::kWarn);
  EXPECT_EQ(verdict_of("query-crafting", [](auto& e) { e.serve->stateful = "off"; }), Verdict::kFail);
  EXPECT_EQ(verdict_of("query-crafting", [](auto& e) { e.serve->stateful = "flag"; }), Verdict::kWarn);
  EXPECT_EQ(verdict_of("extraction", [](auto& e) { e.serve->extraction = "off"; }), Verdict::kFail);
  EXPECT_EQ(verdict_of("extraction", [](auto& e) { e.serve->extraction = "block"; }), Verdict::kPass);
}

TEST(ThreatPolicyFile, UnknownKeysAndBadValuesAreRefusedByName) {
  const auto refused = [](const std::string& yaml) { return error_of([&] { ThreatPolicy::parse(yaml, "p.yaml"); }); };
  EXPECT_NE(refused("evasion: {min_robust_acuracy: 0.5}").find("p.yaml: evasion.min_robust_acuracy: unknown key"),
            std::string::npos);
  EXPECT_NE(refused("evasoin: {min_robust_accuracy: 0.5}").find("p.yaml: evasoin: unknown section"), std::string::npos);
  EXPECT_NE(refused("detection: {min_tpr: 1.5}").find("p.yaml: detection.min_tpr: 1.5 is outside [0, 1]"),
            std::string::npos);
  EXPECT_NE(refused("detection: {min_tpr: high}").find("p.yaml: detection.min_tpr: must be a number"),
            std::string::npos);
  EXPECT_NE(refused("serving: {stateful: sometimes}").find("p.yaml: serving.stateful: 'sometimes' is not one of"),
            std::string::npos);
  EXPECT_NE(refused("serving: {require_auth: maybe}").find("p.yaml: serving.require_auth: must be true or false"),
            std::string::npos);
  EXPECT_NE(refused("poison: {max_flagged_classes: -1}").find("p.yaml: poison.max_flagged_classes: -1 is outside"),
            std::string::npos);
  EXPECT_NE(refused("- a list").find("p.yaml: expected a map"), std::string::npos);
  try {
    ThreatPolicy::parse("privacy: {max_auk: 0.7}", "p.yaml");
    FAIL() << "accepted an unknown key";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kInvalidArgument);  // the CLI's exit 2
  }
  // Empty and partial files keep every other default.
  EXPECT_EQ(ThreatPolicy::parse("", "p.yaml").to_json(), ThreatPolicy{}.to_json());
  const auto p = ThreatPolicy::parse("privacy:\n  max_auc: 0.7\nserving: {stateful: block}\n", "p.yaml");
  EXPECT_DOUBLE_EQ(p.privacy.max_auc, 0.7);
  EXPECT_EQ(p.serving.stateful, GuardMode::kBlock);
  EXPECT_DOUBLE_EQ(p.privacy.max_tpr_at_1pct_fpr, ThreatPolicy{}.privacy.max_tpr_at_1pct_fpr);
}

// python3-jsonschema's Draft 2020-12 validator; "ok" or every error, "path: message; ...".
std::string validate(const TempDir& tmp, const json& doc) {
  const std::string path = tmp.file("doc.json");
  atomic_write_file(path, doc.dump());
  const std::string script =
      "import json,sys,jsonschema\n"
      "schema=json.load(open(sys.argv[1]))\n"
      "v=jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())\n"
      "errors=sorted(v.iter_errors(json.load(open(sys.argv[2]))), key=lambda e: list(e.path))\n"
      "print('ok' if not errors else '; '.join('/'.join(map(str, e.path)) + ': ' + e.message for e in errors))\n";
  atomic_write_file(tmp.file("validate.py"), script);
  const auto r = testing::run_command(std::string(testing::kPython) + " " + tmp.file("validate.py") + " " + kRepo +
                                      "/docs/schemas/threat-report.schema.json " + path);
  return r.exit_code == 0 ? r.output.substr(0, r.output.find_last_not_of('\n') + 1) : "python failed: " + r.output;
}

TEST(ThreatJson, ValidatesAgainstTheDocumentedSchema) {
  TempDir tmp;
  auto missing = passing_evidence();
  missing.attack.reset();
  missing.serve.reset();
  missing.gate = {};
  auto failing = passing_evidence();
  failing.integrity.verified = false;
  failing.integrity.verify_problem = "digest";
  for (const auto& e : {passing_evidence(), missing, failing}) {
    const json j = assess_threat(e, ThreatPolicy{}).to_json();
    EXPECT_EQ(validate(tmp, j), "ok") << j.dump(2).substr(0, 2000);
  }
  // The validator is not vacuous: a verdict the schema does not know, and a failing row without an
  // action, are each refused.
  json bad = assess_threat(passing_evidence(), ThreatPolicy{}).to_json();
  bad["rows"][0]["verdict"] = "maybe";
  EXPECT_NE(validate(tmp, bad).find("rows/0/verdict"), std::string::npos);
  json no_action = assess_threat(failing, ThreatPolicy{}).to_json();
  for (auto& r : no_action["rows"]) {
    if (r["verdict"] == "fail") r["action"] = "";
  }
  EXPECT_NE(validate(tmp, no_action).find("action"), std::string::npos);
}

TEST(ThreatHtml, EscapesEveryTextAndLoadsNothing) {
  auto e = passing_evidence();
  e.serve->tokens[0].id = kPayload;
  e.lineage.dataset = kPayload;
  const std::string html = render_threat_html(assess_threat(e, ThreatPolicy{}));
  EXPECT_EQ(html.find(kPayload), std::string::npos);
  EXPECT_EQ(html.find("<img"), std::string::npos);
  EXPECT_NE(html.find("&lt;/script&gt;&lt;img"), std::string::npos);
  size_t scripts = 0;
  for (size_t at = html.find("</script"); at != std::string::npos; at = html.find("</script", at + 1)) ++scripts;
  EXPECT_EQ(scripts, 4u);  // error hook, data, Chart.js, page script: nothing from the evidence closes one
  EXPECT_EQ(html.find("http://"), std::string::npos);
  EXPECT_EQ(html.find("https://"), std::string::npos);
}

TEST(ThreatBrowser, ChromiumDrawsThePageWithEveryRowAndNoErrors) {
  ASSERT_EQ(std::system("command -v chromium >/dev/null 2>&1"), 0)
      << "chromium is not installed: `make deps` installs it (it is in the Makefile's DEB_PACKAGES)";
  TempDir tmp;
  auto e = passing_evidence();
  e.detection->results[0].tpr = 0.2;  // a failing row with an action, drawn as such
  const auto report = assess_threat(e, ThreatPolicy{});
  const std::string page = tmp.file("threat.html");
  atomic_write_file(page, render_threat_html(report));
  const auto dom = test::chromium(tmp, "--dump-dom", page);
  ASSERT_EQ(dom.exit_code, 0) << read_file(tmp.file("chromium.log"));
  EXPECT_EQ(test::body_attr(dom.output, "data-errors"), "0");
  EXPECT_EQ(test::body_attr(dom.output, "data-charts-expected"), "2");
  EXPECT_EQ(test::body_attr(dom.output, "data-charts-drawn"), "2");
  EXPECT_EQ(test::body_attr(dom.output, "data-rows"), std::to_string(report.rows.size()));
  for (const auto& r : report.rows) {
    EXPECT_NE(dom.output.find("<tr data-check=\"" + r.key + "\" data-technique=\"" + r.technique_id +
                              "\" data-verdict=\"" + to_string(r.verdict) + "\">"),
              std::string::npos)
        << r.key;
  }
  EXPECT_NE(dom.output.find("data-verdict=\"fail\""), std::string::npos);
}

}  // namespace
}  // namespace bulwark::report
