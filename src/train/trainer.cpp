#include "train/trainer.h"

#include <torch/torch.h>

#include <chrono>
#include <cstdio>
#include <limits>
#include <optional>

#include "core/error.h"
#include "core/progress.h"
#include "data/augment.h"
#include "train/distributed.h"
#include "train/evaluate.h"

namespace bulwark::train {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// "  val acc 86.1%" plus each hook-provided "<name>_validation_accuracy" (e.g. "pgd10 70.2%").
std::string validation_status(const EpochStats& stats) {
  char buf[48];
  std::snprintf(buf, sizeof buf, "  val acc %.1f%%", 100 * stats.validation_accuracy);
  std::string out = buf;
  const std::string suffix = "_validation_accuracy";
  for (const auto& [key, value] : stats.extra.items()) {
    if (!value.is_number() || key.size() <= suffix.size() ||
        key.compare(key.size() - suffix.size(), suffix.size(), suffix) != 0) {
      continue;
    }
    std::snprintf(buf, sizeof buf, " %s %.1f%%", key.substr(0, key.size() - suffix.size()).c_str(),
                  100 * value.get<double>());
    out += buf;
  }
  return out;
}

std::string step_status(double loss, double acc, double ips) {
  char buf[96];
  std::snprintf(buf, sizeof buf, "loss %.4f acc %.1f%% %.0f img/s", loss, 100 * acc, ips);
  return buf;
}

}  // namespace

StepOutput CrossEntropyObjective::step(model::Model& m, const torch::Tensor& x, const torch::Tensor& y,
                                       const StepContext&) {
  auto logits = m.logits(x);
  return {torch::nn::functional::cross_entropy(logits, y), logits};
}

nlohmann::json EpochStats::to_json() const {
  return {{"epoch", epoch},
          {"train_loss", train_loss},
          {"train_accuracy", train_accuracy},
          {"validation_accuracy", validation_accuracy},
          {"selection_score", selection_score},
          {"seconds", seconds},
          {"images_per_s", images_per_s},
          {"partial", partial},
          {"extra", extra}};
}

nlohmann::json TrainResult::to_json() const {
  nlohmann::json e = nlohmann::json::array();
  for (const auto& s : epochs) e.push_back(s.to_json());
  nlohmann::json j = {{"epochs", e},
                      {"best_epoch", best_epoch},
                      {"seconds", seconds},
                      {"images_per_s", images_per_s},
                      {"stopped_by_budget", stopped_by_budget}};
  if (world_size > 1) {
    j["world_size"] = world_size;
    j["communication_seconds"] = communication_seconds;
  }
  return j;
}

namespace {

// What the loop needs from the data-parallel layer, as no-ops for one process.
struct Parallel {
  std::unique_ptr<DataParallel> dp;
  int rank() const { return dp ? dp->rank() : 0; }
  int world() const { return dp ? dp->world_size() : 1; }
};

// After rank 0 validated and ran the hook: its model, the objective's shared state and the
// figures the checkpoint choice reads, to every rank.
void share_epoch_end(DataParallel& dp, model::Model& m, Objective& objective, EpochStats& stats) {
  dp.broadcast_model(m, "rank 0's model after validation");
  const auto state = objective.shared_state();
  std::vector<double> values = {stats.validation_accuracy, stats.selection_score, stats.model_replaced ? 1.0 : 0.0};
  values.insert(values.end(), state.begin(), state.end());
  values = dp.broadcast_values(values, "rank 0's validation results");
  stats.validation_accuracy = values[0];
  stats.selection_score = values[1];
  stats.model_replaced = values[2] != 0.0;
  if (!state.empty()) objective.set_shared_state(std::vector<double>(values.begin() + 3, values.end()));
}

// One step of weight averaging (TrainOptions::ema_decay): avg <- d * avg + (1 - d) * weights after
// update t (1-based), d = min(decay, (1 + t) / (10 + t)) as TensorFlow's ExponentialMovingAverage
// warms up, so the first averages are not held to the initial weights. Floating buffers (BatchNorm
// statistics) are averaged too and integer ones (batch counts) copied, as timm's ModelEmaV2 does.
void update_average(model::Model& m, model::ModelState& avg, int64_t t, double decay) {
  torch::NoGradGuard no_grad;
  const double d = std::min(decay, (1.0 + static_cast<double>(t)) / (10.0 + static_cast<double>(t)));
  size_t i = 0;
  for (const auto& p : m.module().parameters()) avg.parameters[i++].mul_(d).add_(p.detach(), 1.0 - d);
  i = 0;
  for (const auto& b : m.module().buffers()) {
    torch::Tensor& a = avg.buffers[i++];
    if (a.is_floating_point()) {
      a.mul_(d).add_(b, 1.0 - d);
    } else {
      a.copy_(b);
    }
  }
}

}  // namespace

TrainResult fit(model::Model& m, const data::Dataset& train, const data::Dataset& validation, const TrainOptions& o,
                Objective& objective, const EpochHook& on_epoch_end) {
  if (train.size() == 0) throw invalid_argument("training set is empty");
  m.check_input(train.images.narrow(0, 0, 1));
  torch::manual_seed(o.seed());
  m.set_parameters_require_grad(true);
  Parallel par;
  if (o.process_group()) {
    par.dp = std::make_unique<DataParallel>(o.process_group(), m);
    par.dp->expect_agreement({{"training images", static_cast<double>(train.size())},
                              {"validation images", static_cast<double>(validation.size())},
                              {"--batch", static_cast<double>(o.batch_size())},
                              {"--epochs", static_cast<double>(o.epochs())},
                              {"--seed", static_cast<double>(o.seed() % (1ULL << 52))},
                              {"--lr", o.lr()},
                              {"parameters", static_cast<double>(m.parameter_count())}});
    par.dp->broadcast_model(m, "initial parameters");  // every rank starts from rank 0's weights
  }
  const bool lead = par.rank() == 0;
  const model::ChannelsLast layout(m, o.channels_last());  // before the optimizer sees the parameters
  std::unique_ptr<torch::optim::Optimizer> optimizer_owner;
  if (o.optimizer() == "sgd") {
    // SGD with momentum 0.9 and (coupled) weight decay: the ResNet recipe of the CIFAR papers.
    optimizer_owner = std::make_unique<torch::optim::SGD>(
        m.parameters(), torch::optim::SGDOptions(o.lr()).momentum(0.9).weight_decay(o.weight_decay()));
  } else {
    optimizer_owner = std::make_unique<torch::optim::Adam>(
        m.parameters(), torch::optim::AdamOptions(o.lr()).weight_decay(o.weight_decay()));
  }
  torch::optim::Optimizer& optimizer = *optimizer_owner;

  TrainResult result;
  result.world_size = par.world();
  std::optional<model::ModelState> best;  // weights and buffers (BatchNorm statistics)
  std::optional<model::ModelState> average;  // o.ema_decay() > 0: the weight average
  int64_t updates = 0;
  if (o.ema_decay() > 0) average = m.snapshot();
  double best_score = -std::numeric_limits<double>::infinity();
  int64_t images_seen = 0;
  const auto run_start = Clock::now();
  const auto out_of_time = [&] {
    return (o.budget_seconds() > 0 && seconds_since(run_start) > o.budget_seconds()) || o.cancelled();
  };
  // Data-parallel ranks agree on when to stop and on the clock the schedule reads: both come
  // from the totals exchanged with each step's gradients (one step late).
  double job_clock_s = 0;

  const int64_t steps_per_epoch = (train.size() + o.batch_size() - 1) / o.batch_size();
  const int64_t total_steps = steps_per_epoch * o.epochs();
  for (int64_t epoch = 0; epoch < o.epochs() && !result.stopped_by_budget; ++epoch) {
    const auto epoch_start = Clock::now();
    // The same seeded permutation on every rank; each rank takes its slice of every batch.
    const auto batches = data::batch_indices(train.size(), o.batch_size(), /*shuffle=*/true, o.seed(), epoch);
    ProgressBar bar("epoch " + std::to_string(epoch + 1) + "/" + std::to_string(o.epochs()), train.size(),
                    o.progress() && lead);
    m.set_training(true);
    double loss_sum = 0;
    int64_t correct = 0, seen = 0;
    EpochStats stats;
    stats.epoch = epoch + 1;
    bool stop = par.dp && par.dp->any(out_of_time(), "the stop vote");
    for (size_t b = 0; b < batches.size(); ++b) {
      if (!par.dp) stop = out_of_time();
      if (stop) {
        result.stopped_by_budget = true;
        stats.partial = true;
        break;
      }
      const int64_t global_n = batches[b].size(0);
      const Shard shard = par.dp ? shard_of(global_n, par.rank(), par.world()) : Shard{0, global_n, global_n};
      const auto idx = batches[b].narrow(0, shard.offset, shard.size);
      StepContext ctx{epoch, static_cast<int64_t>(b), static_cast<int64_t>(batches.size())};
      if (par.dp) {
        ctx.shard_offset = shard.offset;
        ctx.global_batch = global_n;
      }
      if (o.cyclic_lr()) {
        optimizer.param_groups()[0].options().set_lr(o.lr_at(epoch * steps_per_epoch + static_cast<int64_t>(b), total_steps,
                        par.dp ? job_clock_s : seconds_since(run_start)));
      }
      StepTotals step;
      if (shard.size > 0) {
        auto x = train.inputs(idx);
        if (o.augment()) {
          // Seeded by (run, epoch, batch, rank's shard): the same crops on a rerun.
          x = data::crop_flip(x, o.seed() * 1000003ULL + static_cast<uint64_t>(epoch) * 65537ULL +
                                     static_cast<uint64_t>(b) * 131ULL + static_cast<uint64_t>(shard.offset));
        }
        const auto y = train.targets(idx);
        StepOutput out = objective.step(m, x, y, ctx);
        optimizer.zero_grad();
        out.loss.backward();
        step.seen = static_cast<double>(shard.size);
        step.loss_sum = out.loss.item<double>() * step.seen;
        step.correct = out.logits.detach().argmax(1).eq(y).sum().item<double>();
      } else {
        optimizer.zero_grad();  // an empty slice adds nothing to the sum
      }
      if (par.dp) {
        step.stop_votes = out_of_time() ? 1 : 0;
        step.elapsed_s = seconds_since(run_start);
        step = par.dp->reduce_step(step, static_cast<double>(shard.size) / static_cast<double>(global_n));
        stop = step.stop_votes > 0;
        job_clock_s = step.elapsed_s / par.world();
      }
      optimizer.step();
      if (average) update_average(m, *average, ++updates, o.ema_decay());
      loss_sum += step.loss_sum;
      correct += static_cast<int64_t>(step.correct);
      seen += static_cast<int64_t>(step.seen);
      bar.update(seen, step_status(loss_sum / seen, static_cast<double>(correct) / seen,
                                   seen / seconds_since(epoch_start)));
    }
    images_seen += seen;
    m.set_training(false);
    if (seen == 0) break;  // the budget ran out before this epoch did any work
    stats.train_loss = loss_sum / seen;
    stats.train_accuracy = static_cast<double>(correct) / seen;
    stats.images_per_s = seen / seconds_since(epoch_start);
    // With weight averaging, the epoch is judged (and checkpointed) on the average; the next epoch
    // trains on from the raw weights.
    std::optional<model::ModelState> raw;
    if (average) {
      raw = m.snapshot();
      m.restore(*average);
    }
    if (lead) {
      if (validation.size() > 0) stats.validation_accuracy = evaluate(m, validation).accuracy();
      stats.selection_score = stats.validation_accuracy;
      if (on_epoch_end) on_epoch_end(m, stats);
    }
    if (par.dp) share_epoch_end(*par.dp, m, objective, stats);
    stats.seconds = seconds_since(epoch_start);
    bar.finish(step_status(stats.train_loss, stats.train_accuracy, stats.images_per_s) +
               (validation.size() > 0 ? validation_status(stats) : ""));
    if (validation.size() == 0 || stats.selection_score > best_score) {
      best_score = stats.selection_score;
      result.best_epoch = stats.epoch;
      if (validation.size() > 0) best = m.snapshot();
    }
    result.epochs.push_back(stats);
    if (raw && stats.model_replaced) {
      // The hook rolled the model back: the average must not keep the weights it rolled back from.
      raw = m.snapshot();
      average = m.snapshot();
    }
    if (raw) m.restore(*raw);
  }
  if (best) {
    m.restore(*best);
  } else if (average) {
    m.restore(*average);  // no validation: the average of the whole run
  }
  result.seconds = seconds_since(run_start);
  result.images_per_s = result.seconds > 0 ? images_seen / result.seconds : 0;
  if (par.dp) result.communication_seconds = par.dp->communication_seconds();
  return result;
}

}  // namespace bulwark::train
