#include "control/runner.h"

#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <thread>

#include "control/kubernetes.h"
#include "core/error.h"
#include "core/files.h"
#include "core/subprocess.h"
#include "data/classes.h"
#include "data/dataset.h"
#include "defense/harden.h"
#include "model/model.h"

namespace bulwark::control {
namespace {

using Clock = std::chrono::steady_clock;

defense::HardenOptions harden_options(const HardeningPolicy& p) {
  defense::HardenOptions o;
  o.method = p.method;
  o.threat.eps = p.eps;
  o.epochs = p.epochs;
  o.batch_size = p.batch;
  o.pgd_steps = p.pgd_steps;
  o.clean_weight = p.clean_weight;
  o.attack_precision = attack::parse_precision(p.attack_precision, "policy.hardening.attack_precision");
  o.budget_seconds = p.budget_minutes * 60;
  o.seed = p.seed;
  o.progress = false;
  return o;
}

// The job in a thread of this process; cancelled through harden's cancel flag at the next batch.
class ThreadRunner : public JobRunner {
 public:
  ~ThreadRunner() override {
    cancel_->store(true);
    if (thread_.joinable()) thread_.join();
  }
  void start(const HardenJob& job) override {
    thread_ = std::thread([this, job] { run(job); });
  }
  JobStatus poll() override {
    std::lock_guard<std::mutex> lock(mu_);
    return status_;
  }
  void cancel(double deadline_s) override {
    cancel_->store(true);
    const auto until = Clock::now() + std::chrono::duration<double>(deadline_s);
    while (!poll().done() && Clock::now() < until) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }

 private:
  void set(JobStatus::Phase phase, const std::string& error, const std::string& progress, nlohmann::json result = {}) {
    std::lock_guard<std::mutex> lock(mu_);
    status_.phase = phase;
    status_.error = error;
    status_.progress = progress;
    if (!result.is_null()) status_.result = std::move(result);
  }
  void run(const HardenJob& job) {
    try {
      set(JobStatus::Phase::kRunning, "", "loading " + job.policy.data);
      model::Model m = model::Model::load(job.base_model);
      auto o = harden_options(job.policy);
      o.threat.lo = m.spec().lo;
      o.threat.hi = m.spec().hi;
      o.cancel = cancel_;
      o.validate();
      data::LoadOptions load;
      load.shape = m.spec().input_shape;
      load.progress = false;
      auto train = data::load_dataset(job.policy.data, data::Split::kTrain, load);
      data::require_held_out(train, data::load_dataset(job.policy.data, data::Split::kTest, load));
      data::check_classes(train, m.spec().class_names);
      o.augment = m.spec().input_shape[0] == 3;  // the CLI's default for RGB
      if (job.policy.limit > 0 && job.policy.limit < train.size()) train = train.head(job.policy.limit, "policy.hardening.limit");
      const auto split =
          data::split_train_validation(train, job.policy.validation_fraction(train.size()), job.policy.seed);
      set(JobStatus::Phase::kRunning, "", job.policy.method + " on " + std::to_string(split.train.size()) + " images");
      const auto result = defense::harden(m, split.train, split.validation, o);
      if (cancel_->load()) {
        set(JobStatus::Phase::kCancelled, "cancelled", "cancelled");
        return;
      }
      m.mutable_spec().hardening = {{"options", o.to_json()}, {"from", job.base_model}, {"job", job.id}};
      const std::string tmp = job.out + ".tmp";
      m.save(tmp);
      std::filesystem::rename(tmp, job.out);
      set(JobStatus::Phase::kSucceeded, "", "done", result.to_json());
    } catch (const std::exception& e) {
      set(JobStatus::Phase::kFailed, e.what(), "failed");
    }
  }

  std::shared_ptr<std::atomic<bool>> cancel_ = std::make_shared<std::atomic<bool>>(false);
  std::mutex mu_;
  JobStatus status_;
  std::thread thread_;
};

// `bulwark harden ...` as a child: stdout (its --json summary) and stderr (progress) go to files
// in the job directory; progress is the log's last line.
class SubprocessRunner : public JobRunner {
 public:
  explicit SubprocessRunner(std::string binary) : binary_(std::move(binary)) {}
  ~SubprocessRunner() override { cancel(5); }
  void start(const HardenJob& job) override {
    job_ = job;
    SpawnOptions spawn{{binary_}, job.dir + "/harden.json", job.dir + "/harden.log"};
    for (auto& a : harden_argv(job)) spawn.argv.push_back(std::move(a));
    child_ = std::make_unique<Subprocess>(spawn);
  }
  JobStatus poll() override {
    if (finished_) return status_;
    status_.progress = last_log_line();
    const auto code = child_ ? child_->poll() : std::optional<int>(127);
    if (!code) return status_;
    finished_ = true;
    if (cancelled_) {
      status_.phase = JobStatus::Phase::kCancelled;
      status_.error = "cancelled";
    } else if (*code == 0) {
      std::error_code ec;
      std::filesystem::rename(job_.out + ".tmp", job_.out, ec);
      status_.phase = ec ? JobStatus::Phase::kFailed : JobStatus::Phase::kSucceeded;
      if (ec) status_.error = "the job exited 0 but left no model";
      status_.result = nlohmann::json::parse(read_file(job_.dir + "/harden.json"), nullptr, false);
      if (status_.result.is_discarded()) status_.result = nlohmann::json::object();
    } else {
      status_.phase = JobStatus::Phase::kFailed;
      status_.error = "bulwark harden exited " +
                      (*code < 128 ? std::to_string(*code) : "on signal " + std::to_string(*code - 128)) + ": " +
                      status_.progress;
    }
    return status_;
  }
  void cancel(double deadline_s) override {
    if (!child_ || finished_) return;
    cancelled_ = true;
    bool killed = false;
    child_->terminate(deadline_s, &killed);
    poll();
    if (killed) status_.error = "killed after the " + std::to_string(deadline_s) + " s deadline";
  }

 private:
  std::string last_log_line() const {
    std::ifstream in(job_.dir + "/harden.log", std::ios::binary);
    if (!in) return "";
    in.seekg(0, std::ios::end);
    const auto size = static_cast<std::streamoff>(in.tellg());
    const std::streamoff from = size > 4096 ? size - 4096 : 0;
    in.seekg(from);
    std::string tail((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    while (!tail.empty() && (tail.back() == '\n' || tail.back() == '\r')) tail.pop_back();
    const auto cut = tail.find_last_of("\r\n");
    return cut == std::string::npos ? tail : tail.substr(cut + 1);
  }

  std::string binary_;
  HardenJob job_;
  std::unique_ptr<Subprocess> child_;
  bool finished_ = false, cancelled_ = false;
  JobStatus status_;
};

}  // namespace

std::vector<std::string> harden_argv(const HardenJob& job) {
  const auto& p = job.policy;
  std::vector<std::string> args{"--json", "--seed", std::to_string(p.seed), "harden", "--model",
                                job.base_model, "--method", p.method, "--eps", std::to_string(p.eps), "--epochs",
                                std::to_string(p.epochs), "--batch", std::to_string(p.batch), "--steps",
                                std::to_string(p.pgd_steps), "--clean-weight", std::to_string(p.clean_weight),
                                "--attack-precision", p.attack_precision,
                                "--budget-minutes", std::to_string(p.budget_minutes),
                                "--data", p.data, "--eval-n", "200", "--out", job.out + ".tmp"};
  if (p.limit > 0) {
    args.push_back("--limit");
    args.push_back(std::to_string(p.limit));
  }
  // The same held-out share the controller calibrates the candidate on (60,000: Fashion-MNIST's
  // training split when there is no limit).
  args.push_back("--val-fraction");
  args.push_back(std::to_string(p.validation_fraction(p.limit > 0 ? p.limit : 60000)));
  return args;
}

std::string to_string(JobStatus::Phase phase) {
  switch (phase) {
    case JobStatus::Phase::kRunning: return "running";
    case JobStatus::Phase::kSucceeded: return "succeeded";
    case JobStatus::Phase::kFailed: return "failed";
    case JobStatus::Phase::kCancelled: return "cancelled";
  }
  return "running";
}

std::unique_ptr<JobRunner> make_runner(const std::string& kind, const std::string& bulwark_binary,
                                       const KubernetesPolicy& kubernetes) {
  if (kind == "thread") return std::make_unique<ThreadRunner>();
  if (kind == "subprocess") return std::make_unique<SubprocessRunner>(bulwark_binary);
  if (kind == "kubernetes") return std::make_unique<KubernetesRunner>(kubernetes);
  throw invalid_argument("policy.hardening.runner must be thread, subprocess or kubernetes (got '" + kind + "')");
}

}  // namespace bulwark::control
