// bulwark train — train a zoo model on a dataset and save it with its spec.
#include <torch/torch.h>

#include "cli/common.h"
#include "cli/data_flags.h"
#include "core/error.h"
#include "cli/run_record.h"
#include "core/progress.h"
#include "data/classes.h"
#include "data/dataset.h"
#include "dist/group.h"
#include "model/zoo.h"
#include "train/train.h"

namespace bulwark::cli {
namespace {

struct TrainFlags {
  std::string arch = "cnn";
  DataFlags data;
  std::string input_shape;  // image folders: resize to this
  int64_t epochs = 3;
  int64_t batch = 128;
  double lr = 1e-3;
  std::string optimizer = "adam";
  double weight_decay = 0;
  double ema = 0;
  std::string schedule = "constant";
  double val_fraction = 0.05;
  int64_t limit = 0;       // 0 = whole training set
  int64_t test_limit = 0;  // 0 = whole test set
  std::string out;
  bool nchw = false;
  bool quiet = false;
  std::string registry;  // record the run there
  dist::Flags dist;      // data-parallel job (--dist-*, or the launcher's variables)
};

void run_train(const TrainFlags& f, const CLI::App& cmd, const GlobalOptions& g) {
  apply_threads(g);
  // Every rank loads the same data and builds the same model; rank 0 alone evaluates, saves and
  // records the run (train::fit keeps the ranks' models identical).
  const auto group = join_process_group(f.dist, !f.quiet);
  const bool lead = !group || group->rank() == 0;
  std::unique_ptr<CommandRun> run;
  if (lead) run = std::make_unique<CommandRun>(f.registry, "train", cmd, g);
  const auto options = train::TrainOptions()
                           .epochs(f.epochs)
                           .batch_size(f.batch)
                           .lr(f.lr)
                           .optimizer(f.optimizer)
                           .weight_decay(f.weight_decay)
                           .ema_decay(f.ema)
                           .cyclic_lr(f.schedule == "one-cycle")
                           .validation_fraction(f.val_fraction)
                           .seed(g.seed)
                           .process_group(group)
                           .channels_last(!f.nchw)
                           .progress(!f.quiet);
  data::LoadOptions load = load_options(f.data, nullptr, !f.quiet);
  if (!f.input_shape.empty()) load.shape = model::parse_shape(f.input_shape, "--input-shape");
  data::Dataset train_set = data::load_dataset(f.data.data, data::Split::kTrain, load);
  data::Dataset test_set = data::load_dataset(f.data.data, data::Split::kTest, load);
  data::require_held_out(train_set, test_set);
  if (test_set.class_names != train_set.class_names) {
    // Numbered classes (IDX, .npz) are counted from the labels each split holds: the model takes the
    // larger count. Named ones must agree.
    if (!data::numbered_classes(train_set.class_names) || !data::numbered_classes(test_set.class_names)) {
      throw invalid_argument("--data " + f.data.data + ": the test split's classes differ from the training split's");
    }
    if (test_set.class_names.size() > train_set.class_names.size()) train_set.class_names = test_set.class_names;
  }
  if (f.limit > 0) train_set = train_set.head(f.limit, "--limit");
  if (f.test_limit > 0) test_set = test_set.head(f.test_limit, "--test-limit");
  const auto split = data::split_train_validation(train_set, options.validation_fraction(), g.seed);
  const auto train_options = train::TrainOptions(options).augment(augment_for(f.data, train_set.images.size(1)));

  model::ModelSpec spec = model::default_spec();
  spec.input_shape = {train_set.images.size(1), train_set.images.size(2), train_set.images.size(3)};
  spec.class_names = train_set.class_names;
  spec.dataset = train_set.name;
  model::Model m = model::create_model(f.arch, spec, g.seed);

  train::CrossEntropyObjective objective;
  const train::TrainResult result = train::fit(m, split.train, split.validation, train_options, objective);
  if (!lead) return finish_rank(group);
  const train::EvalResult test = train::evaluate(m, test_set);

  m.mutable_spec().training = {{"options", train_options.to_json()},
                               {"objective", objective.to_json()},
                               {"result", result.to_json()},
                               {"test_accuracy", test.accuracy()},
                               {"test_images", test.n},
                               {"train_images", split.train.size()},
                               {"validation_images", split.validation.size()}};
  m.save(f.out);

  nlohmann::json j = {{"model", f.out},           {"arch", f.arch},
                      {"parameters", m.parameter_count()}, {"dataset", train_set.name},
                      {"seed", g.seed},           {"test_accuracy", test.accuracy()},
                      {"test_images", test.n},    {"train", result.to_json()}};
  run->finish(j, f.out);
  std::vector<std::pair<std::string, std::string>> rows = {
      {"model", f.arch + " (" + with_commas(m.parameter_count()) + " parameters)"},
      {"data", train_set.name + ": " + with_commas(split.train.size()) + " train / " +
                   with_commas(split.validation.size()) + " validation / " + with_commas(test.n) + " test"},
      {"epochs", std::to_string(result.epochs.size()) + " (best " + std::to_string(result.best_epoch) + ")"},
      {"test accuracy", percent(test.accuracy())},
      {"time", format_duration(result.seconds) + " (" + with_commas(static_cast<int64_t>(result.images_per_s)) +
                   " img/s)"}};
  if (group) rows.push_back({"ranks", ranks_text(result.world_size, result.communication_seconds, result.seconds)});
  rows.push_back({"seed", std::to_string(g.seed)});
  rows.push_back({"saved", f.out});
  print_result(g, j, rows);
  finish_rank(group);
}

}  // namespace

void register_train(CLI::App& app, GlobalOptions& g) {
  auto flags = std::make_shared<TrainFlags>();
  auto* cmd = app.add_subcommand("train", "Train a model from the zoo and save it (TorchScript + spec)");
  cmd->add_option("--model", flags->arch, "Architecture: mlp, cnn-small, cnn, resnet18, preact-resnet18 (the CIFAR variants)")->capture_default_str();
  add_data_options(cmd, flags->data);
  add_augment_options(cmd, flags->data);
  cmd->add_option("--input-shape", flags->input_shape,
                  "C,H,W to convert image folders to (default: RGB at the images' own size)");
  cmd->add_option("--epochs", flags->epochs, "Epochs")->capture_default_str();
  cmd->add_option("--batch", flags->batch, "Batch size")->capture_default_str();
  cmd->add_option("--lr", flags->lr, "Learning rate (peak rate with --lr-schedule one-cycle)")->capture_default_str();
  cmd->add_option("--optimizer", flags->optimizer, "adam, or sgd (momentum 0.9; the ResNet recipe)")
      ->check(CLI::IsMember({"adam", "sgd"}))
      ->capture_default_str();
  cmd->add_option("--weight-decay", flags->weight_decay, "Weight decay (e.g. 5e-4 with sgd)")->capture_default_str();
  cmd->add_option("--ema", flags->ema,
                  "Weight averaging: validate, keep and save an exponential moving average of the weights with this "
                  "decay (e.g. 0.999); 0 = off")
      ->capture_default_str();
  cmd->add_option("--lr-schedule", flags->schedule, "constant or one-cycle")
      ->check(CLI::IsMember({"constant", "one-cycle"}))
      ->capture_default_str();
  cmd->add_option("--val-fraction", flags->val_fraction, "Held-out validation fraction of the training set")
      ->capture_default_str();
  cmd->add_option("--limit", flags->limit, "Use only the first N training images")->check(CLI::PositiveNumber);
  cmd->add_option("--test-limit", flags->test_limit, "Evaluate on the first N test images")->check(CLI::PositiveNumber);
  cmd->add_option("--out", flags->out, "Where to write the model (.pt)")->required();
  cmd->add_flag("--nchw", flags->nchw,
                "Train with the convolution weights in NCHW strides, not channels-last (slower; the sums in "
                "the order Bulwark used before)");
  cmd->add_flag("--quiet", flags->quiet, "No progress bar");
  add_registry_option(cmd, flags->registry);
  add_dist_options(cmd, flags->dist);
  cmd->callback([flags, cmd, &g] { run_train(*flags, *cmd, g); });
}

}  // namespace bulwark::cli
