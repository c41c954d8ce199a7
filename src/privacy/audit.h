// privacy/audit.h — `bulwark privacy audit`: membership inference against a model whose spec says
// how it was trained. The target's own training rows are the members; test-split rows, which no
// model here trained on, are the non-members. Shadow models for offline LiRA are trained on the
// rest of the training split (never on a candidate) by the target's recipe from its spec.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "data/dataset.h"
#include "model/model.h"
#include "privacy/roc.h"

namespace bulwark::privacy {

// AuditOptions().shadows(8).candidates(1000). Setters validate and throw invalid_argument naming
// the CLI flag.
class AuditOptions {
 public:
  // Shadow models for LiRA (--shadows); 0 = the loss baseline alone. 1 is refused: a spread needs two.
  AuditOptions& shadows(int64_t v);
  // Members and non-members scored, each (--candidates); fewer when the sets are smaller.
  AuditOptions& candidates(int64_t v);
  AuditOptions& seed(uint64_t v);
  AuditOptions& progress(bool v);
  int64_t shadows() const { return shadows_; }
  int64_t candidates() const { return candidates_; }
  uint64_t seed() const { return seed_; }
  bool progress() const { return progress_; }
  nlohmann::json to_json() const;

 private:
  int64_t shadows_ = 4;
  int64_t candidates_ = 1000;
  uint64_t seed_ = 0;
  bool progress_ = true;
};

// What the spec says of the target's training set: the first `rows` rows of the training split,
// split by (validation_fraction, seed) as train::fit's caller did; `recipe` is TrainOptions' JSON.
struct TrainingRecord {
  std::string dataset;
  int64_t rows = 0;
  double validation_fraction = 0;
  uint64_t seed = 0;
  nlohmann::json recipe;
};

// Throws invalid_argument saying how to fix it when the spec has no training record (an imported
// model, or one trained before the record existed).
TrainingRecord training_record(const model::ModelSpec& spec);

// The rows of a training split of `split_size` rows that the record's model trained on (not its
// validation rows), sorted.
torch::Tensor member_rows(const TrainingRecord& record, int64_t split_size);

struct ClassResult {
  std::string name;
  RocSummary loss;
  std::optional<RocSummary> lira;
};

struct AuditResult {
  RocSummary loss;
  std::optional<RocSummary> lira;  // without shadows: none
  std::vector<ClassResult> per_class;  // classes with both members and non-members among the candidates
  double member_accuracy = 0;      // the target's accuracy on the member candidates
  double non_member_accuracy = 0;  // and on the non-member candidates: the generalisation gap
  int64_t shadow_rows = 0;         // rows each shadow trained from (its own validation split inside)
  std::vector<double> shadow_accuracy;  // each shadow on the non-member candidates
  bool hardened_target = false;    // shadows follow the training recipe, not the hardening
  TrainingRecord record;
  AuditOptions options;
  double seconds = 0;
  nlohmann::json to_json() const;
};

// `train` and `test` are the target's dataset's two splits, as loaded for the model (shape checked
// by the caller). Throws invalid_argument when the data is not the one the spec names, or is
// smaller than the training record.
AuditResult audit_membership(const model::Model& target, const data::Dataset& train, const data::Dataset& test,
                             const AuditOptions& options);

}  // namespace bulwark::privacy
