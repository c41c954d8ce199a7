#include "privacy/audit.h"

#include <algorithm>
#include <chrono>
#include <iostream>

#include <torch/torch.h>

#include "core/error.h"
#include "model/zoo.h"
#include "privacy/membership.h"
#include "train/train.h"

namespace bulwark::privacy {
namespace {

using nlohmann::json;

// LiRA's own guidance (Carlini et al. 2022, Fig. 9): a per-example variance needs many shadows.
constexpr int64_t kPerExampleVarianceShadows = 64;

template <typename T>
T recipe_value(const json& recipe, const char* key) {
  if (!recipe.contains(key)) {
    throw invalid_argument(std::string("the model's training record has no options.") + key +
                           ": retrain it with this version's `bulwark train`");
  }
  return recipe.at(key).get<T>();
}

train::TrainOptions shadow_options(const json& recipe, uint64_t seed, bool progress) {
  return train::TrainOptions::from_recipe(recipe).seed(seed).progress(progress);
}

// `n` rows of `rows` (1-D int64), drawn by a seeded permutation; all of them when there are fewer.
torch::Tensor sample(const torch::Tensor& rows, int64_t n, uint64_t seed) {
  if (n >= rows.size(0)) return rows;
  return rows.index_select(0, data::seeded_permutation(rows.size(0), seed).narrow(0, 0, n));
}

torch::Tensor rows_not_in(int64_t n, const torch::Tensor& excluded) {
  torch::Tensor keep = torch::ones({n}, torch::kBool);
  keep.index_fill_(0, excluded, false);
  return torch::nonzero(keep).squeeze(1);
}

std::vector<double> pick(const std::vector<double>& v, const std::vector<size_t>& at) {
  std::vector<double> out;
  out.reserve(at.size());
  for (size_t i : at) out.push_back(v[i]);
  return out;
}

std::vector<bool> pick(const std::vector<bool>& v, const std::vector<size_t>& at) {
  std::vector<bool> out;
  out.reserve(at.size());
  for (size_t i : at) out.push_back(v[i]);
  return out;
}

}  // namespace

AuditOptions& AuditOptions::shadows(int64_t v) {
  if (v < 0 || v == 1 || v > 256) {
    throw invalid_argument("--shadows must be 0 (loss baseline only) or 2..256, got " + std::to_string(v));
  }
  shadows_ = v;
  return *this;
}

AuditOptions& AuditOptions::candidates(int64_t v) {
  if (v < 10 || v > 1000000) throw invalid_argument("--candidates must be in [10, 1000000], got " + std::to_string(v));
  candidates_ = v;
  return *this;
}

AuditOptions& AuditOptions::seed(uint64_t v) {
  seed_ = v;
  return *this;
}

AuditOptions& AuditOptions::progress(bool v) {
  progress_ = v;
  return *this;
}

json AuditOptions::to_json() const { return {{"shadows", shadows_}, {"candidates", candidates_}, {"seed", seed_}}; }

TrainingRecord training_record(const model::ModelSpec& spec) {
  const json& t = spec.training;
  if (!t.is_object() || !t.contains("options") || !t.contains("train_images") || !t.contains("validation_images")) {
    throw invalid_argument(
        "the model's spec has no training record (which rows it trained on, and how): a membership audit needs "
        "one. Models from `bulwark train` carry it; an imported model does not (retrain it with `bulwark train`, "
        "or audit the model it was trained from)");
  }
  TrainingRecord r;
  r.dataset = spec.dataset;
  r.recipe = t.at("options");
  r.rows = t.at("train_images").get<int64_t>() + t.at("validation_images").get<int64_t>();
  r.validation_fraction = recipe_value<double>(r.recipe, "validation_fraction");
  r.seed = recipe_value<uint64_t>(r.recipe, "seed");
  if (r.rows <= 0) throw invalid_argument("the model's training record names no training rows");
  return r;
}

torch::Tensor member_rows(const TrainingRecord& record, int64_t split_size) {
  if (record.rows > split_size) {
    throw invalid_argument("the model trained on " + std::to_string(record.rows) + " rows but --data's training split has " +
                           std::to_string(split_size) + ": give the data it was trained on");
  }
  // `bulwark train --limit N` trains on the first N rows, split by data::split_train_validation.
  // Splitting a set whose labels are its row numbers gives the rows that split picks.
  data::Dataset rows;
  rows.labels = torch::arange(record.rows, torch::kInt64);
  rows.images = torch::zeros({record.rows, 1, 1, 1}, torch::kUInt8);
  const auto split = data::split_train_validation(rows, record.validation_fraction, record.seed);
  return std::get<0>(split.train.labels.sort());
}

AuditResult audit_membership(const model::Model& target, const data::Dataset& train, const data::Dataset& test,
                             const AuditOptions& o) {
  const auto start = std::chrono::steady_clock::now();
  AuditResult result;
  result.options = o;
  result.record = training_record(target.spec());
  result.hardened_target = !target.spec().hardening.empty();
  if (!result.record.dataset.empty() && result.record.dataset != train.name) {
    throw invalid_argument("the model was trained on '" + result.record.dataset + "' (its spec) but --data is '" +
                           train.name + "': a membership audit needs the data it was trained on");
  }
  const torch::Tensor members = member_rows(result.record, train.size());
  const torch::Tensor member_candidates = std::get<0>(sample(members, o.candidates(), o.seed() * 7919 + 1).sort());
  const torch::Tensor non_member_candidates =
      std::get<0>(sample(torch::arange(test.size(), torch::kInt64), o.candidates(), o.seed() * 7919 + 2).sort());

  // Candidates in one batch: members first.
  const torch::Tensor x = torch::cat({train.inputs(member_candidates), test.inputs(non_member_candidates)});
  const torch::Tensor y = torch::cat({train.targets(member_candidates), test.targets(non_member_candidates)});
  std::vector<bool> is_member(static_cast<size_t>(x.size(0)), false);
  std::fill_n(is_member.begin(), member_candidates.size(0), true);

  const torch::Tensor target_logits = target.predict_logits(x);
  const torch::Tensor correct = target_logits.argmax(1).eq(y);
  const int64_t m = member_candidates.size(0);
  result.member_accuracy = correct.narrow(0, 0, m).to(torch::kFloat64).mean().item<double>();
  result.non_member_accuracy = correct.narrow(0, m, x.size(0) - m).to(torch::kFloat64).mean().item<double>();

  const std::vector<double> loss = loss_scores(target, x, y);
  result.loss = summarise(loss, is_member);

  std::vector<double> lira;
  if (o.shadows() > 0) {
    if (target.spec().arch == "torchscript") {
      throw invalid_argument(
          "LiRA trains shadow models of the target's architecture, and an imported TorchScript model has none "
          "Bulwark can build: use --shadows 0 (the loss baseline), or audit a zoo model");
    }
    const torch::Tensor pool = rows_not_in(train.size(), member_candidates);
    result.shadow_rows = std::min(result.record.rows, pool.size(0));
    model::ModelSpec shadow_spec = target.spec();
    shadow_spec.training = json::object();
    shadow_spec.hardening = json::object();
    std::vector<torch::Tensor> shadow_phi;
    for (int64_t s = 0; s < o.shadows(); ++s) {
      const uint64_t shadow_seed = o.seed() * 1000003ULL + 101 + static_cast<uint64_t>(s);
      const auto options = shadow_options(result.record.recipe, shadow_seed, o.progress());
      const data::Dataset rows = train.select(std::get<0>(sample(pool, result.shadow_rows, shadow_seed).sort()));
      const auto split = data::split_train_validation(rows, options.validation_fraction(), shadow_seed);
      model::Model shadow = model::create_model(target.spec().arch, shadow_spec, shadow_seed);
      train::CrossEntropyObjective objective;
      const auto trained = train::fit(shadow, split.train, split.validation, options, objective);
      const torch::Tensor logits = shadow.predict_logits(x);
      shadow_phi.push_back(scaled_confidence(logits, y));
      const double acc = logits.narrow(0, m, x.size(0) - m).argmax(1).eq(y.narrow(0, m, x.size(0) - m))
                             .to(torch::kFloat64).mean().item<double>();
      result.shadow_accuracy.push_back(acc);
      if (o.progress()) {
        std::cerr << "shadow " << s + 1 << "/" << o.shadows() << ": " << split.train.size() << " rows, "
                  << trained.seconds << " s, accuracy on the non-members " << acc * 100 << " %\n";
      }
    }
    lira = lira_offline_scores(scaled_confidence(target_logits, y), torch::stack(shadow_phi),
                               o.shadows() < kPerExampleVarianceShadows);
    result.lira = summarise(lira, is_member);
  }

  const auto& names = target.spec().class_names;
  const torch::Tensor labels_tensor = y.to(torch::kInt64).contiguous();
  const std::vector<int64_t> labels(labels_tensor.data_ptr<int64_t>(),
                                    labels_tensor.data_ptr<int64_t>() + labels_tensor.numel());
  for (int64_t c = 0; c < static_cast<int64_t>(names.size()); ++c) {
    std::vector<size_t> at;
    bool has_member = false, has_other = false;
    for (size_t i = 0; i < labels.size(); ++i) {
      if (labels[i] != c) continue;
      at.push_back(i);
      (is_member[i] ? has_member : has_other) = true;
    }
    if (!has_member || !has_other) continue;
    ClassResult cr{names[static_cast<size_t>(c)], summarise(pick(loss, at), pick(is_member, at)), std::nullopt};
    if (!lira.empty()) cr.lira = summarise(pick(lira, at), pick(is_member, at));
    result.per_class.push_back(std::move(cr));
  }
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return result;
}

json AuditResult::to_json() const {
  json classes = json::array();
  for (const auto& c : per_class) {
    json j = {{"class", c.name}, {"loss", c.loss.to_json()}};
    if (c.lira) j["lira"] = c.lira->to_json();
    classes.push_back(j);
  }
  json j = {{"loss", loss.to_json()},
            {"member_accuracy", member_accuracy},
            {"non_member_accuracy", non_member_accuracy},
            {"per_class", classes},
            {"options", options.to_json()},
            {"training_record",
             {{"dataset", record.dataset},
              {"rows", record.rows},
              {"validation_fraction", record.validation_fraction},
              {"seed", record.seed},
              {"recipe", record.recipe}}},
            {"hardened_target", hardened_target},
            {"seconds", seconds}};
  if (lira) {
    j["lira"] = lira->to_json();
    j["lira"]["variant"] = "offline";
    j["lira"]["variance"] = options.shadows() < kPerExampleVarianceShadows ? "global" : "per-example";
    j["shadow_rows"] = shadow_rows;
    j["shadow_accuracy"] = shadow_accuracy;
  }
  return j;
}

}  // namespace bulwark::privacy
