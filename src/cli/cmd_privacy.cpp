// bulwark privacy audit — membership inference against a model: does it leak who was in its
// training set? The loss baseline and offline LiRA with shadow models (privacy/audit.h).
#include <iostream>

#include "cli/common.h"
#include "cli/data_flags.h"
#include "cli/run_record.h"
#include "core/files.h"
#include "core/progress.h"
#include "model/model.h"
#include "privacy/privacy.h"

namespace bulwark::cli {
namespace {

struct PrivacyFlags {
  std::string model;
  DataFlags data;
  int64_t shadows = 4;
  int64_t candidates = 1000;
  std::string out;  // the result JSON
  bool quiet = false;
  std::string registry;
};

std::string roc_text(const privacy::RocSummary& r) {
  return "AUC " + percent(r.auc, 1) + ", TPR " + percent(r.tpr_at_0_1pct, 2) + " at 0.1 % FPR, " +
         percent(r.tpr_at_1pct, 2) + " at 1 % FPR";
}

void run_audit(const PrivacyFlags& f, const CLI::App& cmd, const GlobalOptions& g) {
  apply_threads(g);
  const auto options =
      privacy::AuditOptions().shadows(f.shadows).candidates(f.candidates).seed(g.seed).progress(!f.quiet);
  CommandRun run(f.registry, "privacy-audit", cmd, g);
  const model::Model m = model::Model::load(f.model);
  privacy::training_record(m.spec());  // refuse a model without one before loading any data
  const data::Dataset train = load_for_model(f.data, data::Split::kTrain, m, !f.quiet);
  const data::Dataset test = load_for_model(f.data, data::Split::kTest, m, !f.quiet);
  data::require_held_out(train, test);
  const privacy::AuditResult r = privacy::audit_membership(m, train, test, options);

  nlohmann::json j = r.to_json();
  j["model"] = f.model;
  j["dataset"] = train.name;
  if (!f.out.empty()) atomic_write_file(f.out, j.dump(2) + "\n");
  run.finish(j, f.out);
  std::vector<std::pair<std::string, std::string>> rows = {
      {"model", f.model + " (" + m.spec().arch + (r.hardened_target ? ", hardened" : "") + ")"},
      {"candidates", with_commas(r.loss.members) + " members (its training rows) / " + with_commas(r.loss.non_members) +
                         " non-members (test split)"},
      {"accuracy", percent(r.member_accuracy) + " on members, " + percent(r.non_member_accuracy) + " on non-members"},
      {"loss attack", roc_text(r.loss)}};
  if (r.lira) {
    rows.push_back({"LiRA (offline)", roc_text(*r.lira)});
    rows.push_back({"shadows", std::to_string(f.shadows) + " trained on " + with_commas(r.shadow_rows) +
                                   " rows each (none a candidate), by the target's training recipe"});
  }
  if (r.hardened_target && r.lira) {
    rows.push_back({"note", "the target was hardened; shadows follow its training recipe, not the hardening"});
  }
  if (r.loss.non_members < 1000) {
    rows.push_back({"note", "fewer than 1,000 non-members: TPR at 0.1 % FPR is TPR at zero false positives"});
  }
  rows.push_back({"time", format_duration(r.seconds)});
  rows.push_back({"seed", std::to_string(g.seed)});
  print_result(g, j, rows);
}

}  // namespace

void register_privacy(CLI::App& app, GlobalOptions& g) {
  auto* privacy = app.add_subcommand("privacy", "Privacy audits of a model");
  privacy->require_subcommand(1);
  auto flags = std::make_shared<PrivacyFlags>();
  auto* cmd = privacy->add_subcommand(
      "audit", "Membership inference: the loss baseline and offline LiRA (shadow models), AUC and TPR at low FPR");
  cmd->add_option("--model", flags->model, "Model file (.pt) from `bulwark train` or `bulwark harden`")->required();
  add_data_options(cmd, flags->data);
  cmd->add_option("--shadows", flags->shadows, "Shadow models for LiRA (0: the loss baseline only)")
      ->capture_default_str();
  cmd->add_option("--candidates", flags->candidates, "Members and non-members scored, each")->capture_default_str();
  cmd->add_option("--out", flags->out, "Write the result as JSON");
  cmd->add_flag("--quiet", flags->quiet, "No progress");
  add_registry_option(cmd, flags->registry);
  cmd->callback([flags, cmd, &g] { run_audit(*flags, *cmd, g); });
}

}  // namespace bulwark::cli
