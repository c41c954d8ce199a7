// The threat module against a real registry (Registry::init in a temp dir, a trusted key, run
// records written through RunRecorder as the commands write them): runs are matched to the
// version by their model_sha256 tag and only the newest FINISHED one counts; a stored object with
// one byte changed fails the integrity row; the serve config's tokens reach the page as names and
// rates, never as hashes; and `bulwark report threat` end to end (JSON, exit codes, a bad policy
// key named, nothing written).
#include "threat/threat.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>

#include "core/digest.h"
#include "core/error.h"
#include "core/files.h"
#include "registry/registry.h"
#include "test_util.h"

namespace bulwark::threat {
namespace {

using nlohmann::json;
using testing::TempDir;

void write_text(const std::string& path, const std::string& text) { std::ofstream(path, std::ios::binary) << text; }

struct Env {
  TempDir tmp;
  std::string reg = tmp.file("reg"), model = tmp.file("model.pt"), other = tmp.file("other.pt");
  std::string model_sha, other_sha;
  registry::VersionRecord version;

  Env() {
    registry::Registry::init(reg);
    registry::generate_key_pair(tmp.file("k.key"), tmp.file("k.pub"));
    registry::Registry r(reg, "test");
    r.trust_key(tmp.file("k.pub"));
    write_text(model, std::string(2048, 'm') + "model bytes");
    write_text(other, std::string(2048, 'o') + "another model");
    write_text(tmp.file("model.detect"), "calibration bytes");
    model_sha = sha256_file_hex(model);
    other_sha = sha256_file_hex(other);
    registry::RegisterRequest req;
    req.model = "fashion";
    req.files = {{"model.pt", model}, {"model.detect", tmp.file("model.detect")}};
    req.lineage = {
        {"dataset", "fashion-mnist"}, {"dataset_sha256", std::string(64, 'd')}, {"method", "pgd-at"}, {"eps", 0.1}};
    req.metrics = {{"clean", 0.86}, {"robust", 0.5}};
    const auto key = registry::SigningKey::load(tmp.file("k.key"));
    version = r.register_version(req, &key);
    r.promote("fashion", version.version, registry::Stage::kProduction);
  }

  // A run as `bulwark attack --registry` records it: params as given, the result's numbers as
  // '.'-joined metric keys, the model file's hash as a tag.
  void attack_run(const std::string& sha, const std::string& attacks, std::vector<double> robust, bool finish = true) {
    registry::Registry r(reg, "test");
    registry::RunRecorder run(r, "attack", {{"attacks", attacks}, {"eps", "0.05,0.1"}, {"norm", "linf"}},
                              "bulwark attack");
    run.set_tag("model_sha256", sha);
    run.log_metric("n", 500);
    run.log_metric("clean_accuracy", 0.86);
    const std::vector<double> eps{0.05, 0.1};
    const size_t per_eps = robust.size() / eps.size();
    for (size_t i = 0; i < robust.size(); ++i) {
      run.log_metric("results." + std::to_string(i) + ".eps", eps[i / per_eps]);
      run.log_metric("results." + std::to_string(i) + ".robust_accuracy", robust[i]);
    }
    for (size_t j = 0; j < eps.size(); ++j) {
      double worst = 1;
      for (size_t k = 0; k < per_eps; ++k) worst = std::min(worst, robust[j * per_eps + k]);
      run.log_metric("worst_case." + std::to_string(j) + ".eps", eps[j]);
      run.log_metric("worst_case." + std::to_string(j) + ".robust_accuracy", worst);
    }
    if (finish) run.finish();
    // Runs are ordered by start time at millisecond resolution: the next one starts in a later
    // millisecond, so "newest" is defined.
    const std::string started = registry::utc_timestamp();
    while (registry::utc_timestamp() == started) {
    }
  }

  ThreatSources sources(const std::string& serve_config = "") const {
    return {reg, "fashion@production", serve_config};
  }
};

const report::ThreatRow& row(const report::ThreatReport& r, const std::string& key) {
  for (const auto& x : r.rows) {
    if (x.key == key) return x;
  }
  throw std::runtime_error("no row " + key);
}

TEST(ThreatEvidence, RunsAreTheNewestFinishedOnesOfThisModelFile) {
  Env env;
  env.attack_run(env.model_sha, "fgsm,pgd", {0.7, 0.6, 0.5, 0.45});      // older, this model
  env.attack_run(env.model_sha, "pgd,square", {0.62, 0.6, 0.48, 0.44});  // newest finished, this model
  env.attack_run(env.other_sha, "pgd", {0.1, 0.05});                     // newer, another model
  env.attack_run(env.model_sha, "pgd", {0.01, 0.0}, /*finish=*/false);   // newest, FAILED (never finished)
  {
    registry::Registry r(env.reg, "test");
    registry::RunRecorder d(r, "detect-evaluate", {{"attacks", "fgsm,pgd"}, {"eps", "0.1"}}, "bulwark detect evaluate");
    d.set_tag("model_sha256", env.model_sha);
    d.log_metric("fpr_target", 0.01);
    // Two detectors and the combined flag per attack, then three adaptive rows (combined last).
    const std::vector<std::pair<double, double>> plain{{0.3, 0.01}, {0.4, 0.01}, {0.75, 0.02},
                                                       {0.5, 0.01}, {0.6, 0.01}, {0.9, 0.015}};
    for (size_t i = 0; i < 9; ++i) {
      const std::string k = "rows." + std::to_string(i) + ".";
      d.log_metric(k + "eps", 0.1);
      d.log_metric(k + "tpr_at_threshold", i < 6 ? plain[i].first : 0.5);
      d.log_metric(k + "fpr_at_threshold", i < 6 ? plain[i].second : 0.01);
      if (i >= 6) d.log_metric(k + "evasion", i == 8 ? 0.25 : 0.6);
    }
    d.finish();
    registry::RunRecorder p(r, "privacy-audit", json::object(), "bulwark privacy audit");
    p.set_tag("model_sha256", env.model_sha);
    p.log_metric("loss.auc", 0.51);
    p.log_metric("lira.tpr_at_0_1pct_fpr", 0.03);
    p.finish();
  }
  const auto e = gather_threat_evidence(env.sources());
  EXPECT_EQ(e.model, "fashion@1");
  EXPECT_EQ(e.stage, "production");
  EXPECT_EQ(e.model_sha256, env.model_sha);
  ASSERT_TRUE(e.attack.has_value());
  EXPECT_EQ(e.attack->attacks, (std::vector<std::string>{"pgd", "square"}));
  ASSERT_EQ(e.attack->results.size(), 4u);
  EXPECT_EQ(e.attack->results[3].attack, "square");
  EXPECT_DOUBLE_EQ(e.attack->results[3].eps, 0.1);
  EXPECT_DOUBLE_EQ(e.attack->worst_case.at(0.1), 0.44);
  ASSERT_TRUE(e.detection.has_value());
  ASSERT_EQ(e.detection->results.size(), 2u);  // the combined rows only
  EXPECT_EQ(e.detection->results[0].attack, "fgsm");
  EXPECT_DOUBLE_EQ(e.detection->results[0].tpr, 0.75);
  EXPECT_DOUBLE_EQ(e.detection->results[1].tpr, 0.9);
  EXPECT_DOUBLE_EQ(*e.detection->adaptive_evasion, 0.25);
  ASSERT_TRUE(e.privacy.has_value());
  EXPECT_EQ(e.privacy->metrics.size(), 2u);
  EXPECT_FALSE(e.poison.has_value());
  EXPECT_TRUE(e.integrity.verified) << e.integrity.verify_problem;
  EXPECT_TRUE(e.integrity.audit_ok) << e.integrity.audit_problem;
  EXPECT_TRUE(e.integrity.registered_in_audit && e.integrity.audit_files_match);
  EXPECT_DOUBLE_EQ(*e.gate.robust, 0.5);

  ThreatOptions o{env.sources(), "", env.tmp.file("threat.html")};
  const auto r = write_threat_report(o);
  EXPECT_EQ(row(r, "robustness").verdict, report::Verdict::kPass);    // 0.44 >= 0.4
  EXPECT_EQ(row(r, "membership").verdict, report::Verdict::kFail);    // LiRA TPR 3% at 0.1% FPR > 1%
  EXPECT_EQ(row(r, "poisoning").verdict, report::Verdict::kMissing);  // no scan of this model
  EXPECT_EQ(row(r, "access").verdict, report::Verdict::kMissing);     // no --serve-config
  EXPECT_EQ(row(r, "integrity").verdict, report::Verdict::kPass);
  EXPECT_TRUE(std::filesystem::exists(o.out));
}

TEST(ThreatEvidence, RobustAccuracyUnderThePolicyFails) {
  Env env;
  env.attack_run(env.model_sha, "pgd,square", {0.5, 0.45, 0.3, 0.28});
  write_text(env.tmp.file("policy.yaml"), "evasion:\n  min_robust_accuracy: 0.35\n");
  const auto r = write_threat_report({env.sources(), env.tmp.file("policy.yaml"), env.tmp.file("t.html")});
  const auto& robust = row(r, "robustness");
  EXPECT_EQ(robust.verdict, report::Verdict::kFail);
  EXPECT_NE(robust.reason.find("28.0% at eps 0.1"), std::string::npos) << robust.reason;
  EXPECT_EQ(r.policy_source, env.tmp.file("policy.yaml"));
}

TEST(ThreatEvidence, ATamperedObjectFailsTheIntegrityRow) {
  Env env;
  const std::string object = registry::Registry(env.reg, "test").objects().path_of(env.model_sha);
  std::string bytes = read_file(object);
  bytes[100] ^= 0x01;
  ::chmod(object.c_str(), 0644);
  write_text(object, bytes);
  const auto r = write_threat_report({env.sources(), "", env.tmp.file("t.html")});
  const auto& integrity = row(r, "integrity");
  EXPECT_EQ(integrity.verdict, report::Verdict::kFail);
  EXPECT_NE(integrity.reason.find("does not verify"), std::string::npos) << integrity.reason;
  EXPECT_FALSE(r.evidence.integrity.verified);
  EXPECT_NE(r.evidence.integrity.verify_problem.find("model.pt"), std::string::npos)
      << r.evidence.integrity.verify_problem;
  EXPECT_NE(integrity.action.find("bulwark registry verify fashion@1"), std::string::npos);
  // The report wrote nothing to the registry: no verify-failed entry (it opened it read-only).
  registry::Registry reg(env.reg, "test");
  for (const auto& e : reg.audit().entries()) EXPECT_NE(e.action, "registry.verify-failed");
}

TEST(ThreatEvidence, ServeConfigGivesAuthAndDetectorsButNoSecret) {
  Env env;
  const std::string token_hash = sha256_hex("the secret token");
  write_text(env.tmp.file("tokens.yaml"), "tokens:\n  - id: dashboard\n    sha256: " + token_hash +
                                              "\n    roles: [infer, admin]\n    rate_per_s: 20\n"
                                              "  - id: batch\n    sha256: " +
                                              sha256_hex("another") + "\n    roles: [infer]\n");
  write_text(env.tmp.file("serve.yaml"),
             "model: {fashion: 'registry:fashion@production', other: x.pt}\n"
             "tokens: " +
                 env.tmp.file("tokens.yaml") + "\nstateful: flag\nextraction: block\n");
  const auto r = write_threat_report({env.sources(env.tmp.file("serve.yaml")), "", env.tmp.file("t.html")});
  ASSERT_TRUE(r.evidence.serve.has_value());
  EXPECT_EQ(r.evidence.serve->served_as, std::vector<std::string>{"fashion"});
  EXPECT_TRUE(r.evidence.serve->calibration);  // the version's model.detect
  const auto& access = row(r, "access");
  EXPECT_EQ(access.verdict, report::Verdict::kWarn);  // "batch" infers without a rate limit
  EXPECT_NE(access.reason.find("batch"), std::string::npos) << access.reason;
  EXPECT_EQ(row(r, "query-crafting").verdict, report::Verdict::kWarn);  // flag < throttle
  EXPECT_EQ(row(r, "extraction").verdict, report::Verdict::kPass);
  const std::string page = read_file(env.tmp.file("t.html"));
  EXPECT_EQ(page.find(token_hash), std::string::npos);
  EXPECT_EQ(r.to_json().dump().find(token_hash), std::string::npos);
  EXPECT_NE(page.find("dashboard"), std::string::npos);

  write_text(env.tmp.file("bad.yaml"), "tokens: " + env.tmp.file("tokens.yaml") + "\nmodel: [nonsense]\n");
  try {
    gather_threat_evidence(env.sources(env.tmp.file("bad.yaml")));
    FAIL() << "accepted a malformed model entry";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--model"), std::string::npos) << e.what();
  }
}

TEST(ThreatCli, WritesThePageAndJsonAndRefusesABadPolicyByName) {
  Env env;
  env.attack_run(env.model_sha, "fgsm", {0.7, 0.6});
  const std::string out = env.tmp.file("threat.html");
  const std::string base = std::string(BULWARK_BIN) + " --json report threat --registry " + env.reg +
                           " --model fashion@production --out " + out;
  const auto ok = testing::run_command(base);
  ASSERT_EQ(ok.exit_code, 0) << ok.output;
  const json j = json::parse(ok.output);
  EXPECT_EQ(j["model"], "fashion@1");
  EXPECT_EQ(j["out"], out);
  EXPECT_EQ(std::filesystem::file_size(out), j["bytes"].get<uint64_t>());
  bool warned = false;
  for (const auto& r : j["rows"]) {
    if (r["check_key"] == "robustness") warned = r["verdict"] == "warn";  // only FGSM
  }
  EXPECT_TRUE(warned) << j.dump(2);

  const auto human = testing::run_command(std::string(BULWARK_BIN) + " report threat --registry " + env.reg +
                                          " --model fashion@1 --out " + out);
  ASSERT_EQ(human.exit_code, 0) << human.output;
  EXPECT_NE(human.output.find("AML.T0024.002"), std::string::npos) << human.output;
  EXPECT_NE(human.output.find("robustness claims need strong attacks"), std::string::npos);

  write_text(env.tmp.file("policy.yaml"), "detection:\n  min_tpr: 0.5\n  max_fpt: 0.1\n");
  const std::string out2 = env.tmp.file("never.html");
  const auto bad =
      testing::run_command(std::string(BULWARK_BIN) + " report threat --registry " + env.reg +
                           " --model fashion@1 --policy " + env.tmp.file("policy.yaml") + " --out " + out2);
  EXPECT_EQ(bad.exit_code, 2) << bad.output;
  EXPECT_NE(bad.output.find("detection.max_fpt: unknown key"), std::string::npos) << bad.output;
  EXPECT_FALSE(std::filesystem::exists(out2));

  const auto absent = testing::run_command(std::string(BULWARK_BIN) + " report threat --registry " + env.reg +
                                           " --model fashion@7 --out " + out2);
  EXPECT_EQ(absent.exit_code, 1) << absent.output;
  EXPECT_NE(absent.output.find("fashion"), std::string::npos) << absent.output;
  EXPECT_FALSE(std::filesystem::exists(out2));
}

}  // namespace
}  // namespace bulwark::threat
