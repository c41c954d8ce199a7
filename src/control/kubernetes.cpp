#include "control/kubernetes.h"

#include <unistd.h>

#include <yaml-cpp/yaml.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <sstream>
#include <thread>

#include "control/manifest.h"
#include "core/error.h"
#include "core/files.h"
#include "core/subprocess.h"

namespace bulwark::control {
namespace {

using Clock = std::chrono::steady_clock;

std::string find_on_path(const std::string& binary) {
  if (binary.find('/') != std::string::npos) {
    if (::access(binary.c_str(), X_OK) != 0) throw not_found("kubectl binary " + binary + " is not an executable file");
    return binary;
  }
  const char* path = std::getenv("PATH");
  std::stringstream dirs(path ? path : "/usr/local/bin:/usr/bin:/bin");
  std::string dir;
  while (std::getline(dirs, dir, ':')) {
    const std::string candidate = (dir.empty() ? "." : dir) + "/" + binary;
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  throw not_found("kubectl binary '" + binary + "' is not on PATH (policy.kubernetes.kubectl)");
}

std::string last_line(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ')) s.pop_back();
  const auto cut = s.find_last_of('\n');
  return cut == std::string::npos ? s : s.substr(cut + 1);
}

// The value after `flag` in harden_argv's list.
std::string flag_value(const std::vector<std::string>& argv, const std::string& flag) {
  for (size_t i = 0; i + 1 < argv.size(); ++i) {
    if (argv[i] == flag) return argv[i + 1];
  }
  throw internal_error("harden_argv has no " + flag);
}

// The job template puts these values in an `sh -c` line unquoted: only characters that need no quoting.
void check_shell_safe(const std::string& name, const std::string& value) {
  const bool ok = !value.empty() && std::all_of(value.begin(), value.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || std::string("._/+=:@,-").find(c) != std::string::npos;
  });
  if (!ok) {
    throw invalid_argument(name + " '" + value +
                           "' has characters the job's shell line cannot carry (letters, digits and ._/+=:@,- only)");
  }
}

}  // namespace

bool KubectlResult::not_found() const {
  return exit_code != 0 && !timed_out && (err.find("NotFound") != std::string::npos || err.find("not found") != std::string::npos);
}

std::string KubectlResult::describe() const {
  if (timed_out) return command + " timed out";
  if (exit_code == 127 && err.find("cannot execute") != std::string::npos) return command + ": " + last_line(err);
  const auto why = last_line(err.empty() ? out : err);
  return command + " exited " + std::to_string(exit_code) + (why.empty() ? "" : ": " + why);
}

Kubectl::Kubectl(const std::string& binary, std::string namespace_name, double timeout_s, CancelFlag cancel)
    : binary_(find_on_path(binary)), namespace_(std::move(namespace_name)), timeout_s_(timeout_s), cancel_(std::move(cancel)) {}

KubectlResult Kubectl::run(const std::vector<std::string>& args, const std::string& stdin_text, double timeout_s) const {
  KubectlResult r;
  std::vector<std::string> argv{binary_, "-n", namespace_};
  argv.insert(argv.end(), args.begin(), args.end());
  r.command = "kubectl -n " + namespace_;
  for (const auto& a : args) r.command += " " + a;
  auto p = run_process(argv, stdin_text, timeout_s > 0 ? timeout_s : timeout_s_, kMaxOutputBytes, cancel_);
  r.exit_code = p.exit_code;
  r.timed_out = p.timed_out;
  r.out = std::move(p.out);
  r.err = std::move(p.err);
  return r;
}

std::string dns_label(const std::string& s) {
  std::string out;
  for (const char c : s) {
    const char l = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    out += (std::isalnum(static_cast<unsigned char>(l)) && static_cast<unsigned char>(l) < 128) ? l : '-';
  }
  if (out.size() > 63) out.resize(63);
  const auto b = out.find_first_not_of('-');
  if (b == std::string::npos) return "job";
  out = out.substr(b, out.find_last_not_of('-') - b + 1);
  return out;
}

// --- the runner ---------------------------------------------------------------------------------

KubernetesRunner::KubernetesRunner(KubernetesPolicy policy, double poll_interval_s)
    : policy_(std::move(policy)),
      kubectl_(policy_.kubectl, policy_.namespace_name, policy_.timeout_s),
      poll_interval_s_(poll_interval_s),
      kind_name_(policy_.job_kind == "pytorchjob" ? "PyTorchJob" : "TrainJob") {}

KubernetesRunner::~KubernetesRunner() {
  try {
    cancel(5);
  } catch (const std::exception&) {  // a destructor does not throw; the job's deadline ends it
  }
}

std::string KubernetesRunner::render_job(const HardenJob& job) const {
  if (job.out != job.dir + "/candidate.pt") {
    throw invalid_argument("the " + kind_name_ + " writes <job dir>/candidate.pt.tmp: the job's out must be " + job.dir +
                           "/candidate.pt (got " + job.out + ")");
  }
  const auto argv = harden_argv(job);
  if (std::find(argv.begin(), argv.end(), "--limit") != argv.end()) {
    throw invalid_argument("policy.hardening.limit must be 0 with runner kubernetes");
  }
  TemplateValues v(policy_.variables.begin(), policy_.variables.end());
  v["NAMESPACE"] = policy_.namespace_name;
  v["JOB_NAME"] = dns_label(job.id);
  v["JOB_DIR"] = job.dir;
  v["BASE_MODEL"] = flag_value(argv, "--model");
  v["HARDEN_METHOD"] = flag_value(argv, "--method");
  v["HARDEN_EPS"] = flag_value(argv, "--eps");
  v["HARDEN_EPOCHS"] = flag_value(argv, "--epochs");
  v["HARDEN_BATCH"] = flag_value(argv, "--batch");
  v["HARDEN_STEPS"] = flag_value(argv, "--steps");
  v["HARDEN_CLEAN_WEIGHT"] = flag_value(argv, "--clean-weight");
  v["HARDEN_ATTACK_PRECISION"] = flag_value(argv, "--attack-precision");
  v["HARDEN_BUDGET_MINUTES"] = flag_value(argv, "--budget-minutes");
  v["HARDEN_DATA"] = flag_value(argv, "--data");
  v["HARDEN_VAL_FRACTION"] = flag_value(argv, "--val-fraction");
  v["HARDEN_SEED"] = flag_value(argv, "--seed");
  // What the controller allows a job (runner.h's deadline rule), so the operator stops it then too.
  v["JOB_DEADLINE_SECONDS"] = std::to_string(static_cast<int64_t>(std::ceil(job.policy.budget_minutes * 60 + 300)));
  if (flag_value(argv, "--out") != v["JOB_DIR"] + "/candidate.pt.tmp") throw internal_error("harden_argv's --out moved");
  for (const char* name : {"JOB_DIR", "BASE_MODEL", "HARDEN_DATA", "HARDEN_METHOD", "HARDEN_ATTACK_PRECISION"}) {
    check_shell_safe(name, v[name]);
  }
  return render_manifests(policy_.variables_file(), {policy_.job_template()}, v);
}

void KubernetesRunner::start(const HardenJob& job) {
  job_ = job;
  name_ = dns_label(job.id);
  status_ = JobStatus{};
  status_.progress = "submitting " + kind_name_ + " " + name_;
  try {
    const auto manifest = render_job(job);
    const auto r = kubectl_.run({"apply", "-f", "-"}, manifest);
    if (!r.ok()) return finish(JobStatus::Phase::kFailed, "cannot submit the " + kind_name_ + ": " + r.describe());
  } catch (const std::exception& e) {
    return finish(JobStatus::Phase::kFailed, "cannot submit the " + kind_name_ + ": " + e.what());
  }
  started_ = true;
  last_poll_ = Clock::now();
  status_.progress = kind_name_ + " " + name_ + " submitted";
}

JobStatus KubernetesRunner::poll() {
  if (!started_ || finished_) return status_;
  if (Clock::now() - last_poll_ < std::chrono::duration<double>(poll_interval_s_)) return status_;
  last_poll_ = Clock::now();
  const auto r = kubectl_.run({"get", policy_.job_kind, name_, "-o", "json"});
  if (r.not_found()) {
    finish(JobStatus::Phase::kFailed, "the " + kind_name_ + " " + name_ + " is gone (deleted outside the guard?)");
    return status_;
  }
  if (!r.ok()) {  // the API server may be briefly away: the controller's deadline bounds the wait
    status_.progress = r.describe();
    return status_;
  }
  const auto j = nlohmann::json::parse(r.out, nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    status_.progress = r.command + ": not JSON";
    return status_;
  }
  const std::string success = policy_.job_kind == "pytorchjob" ? "Succeeded" : "Complete";
  std::string latest;
  const auto conditions = j.contains("status") && j["status"].is_object() ? j["status"].value("conditions", nlohmann::json::array())
                                                                          : nlohmann::json::array();
  for (const auto& c : conditions) {
    if (!c.is_object() || c.value("status", "") != "True") continue;
    const auto type = c.value("type", ""), message = c.value("message", ""), reason = c.value("reason", "");
    if (type == success) {
      succeed();
      return status_;
    }
    if (type == "Failed") {
      finish(JobStatus::Phase::kFailed, kind_name_ + " " + name_ + " failed" + (reason.empty() ? "" : " (" + reason + ")") +
                                            (message.empty() ? "" : ": " + message));
      return status_;
    }
    latest = kind_name_ + " " + name_ + ": " + type + (message.empty() ? "" : ": " + message);
  }
  status_.progress = latest.empty() ? kind_name_ + " " + name_ + " submitted, no conditions yet" : latest;
  return status_;
}

void KubernetesRunner::succeed() {
  // As the subprocess runner: harden.json is the summary, the candidate is renamed into place.
  std::error_code ec;
  std::filesystem::rename(job_.out + ".tmp", job_.out, ec);
  if (ec) {
    return finish(JobStatus::Phase::kFailed, kind_name_ + " " + name_ + " completed but left no model at " + job_.out +
                                                 ".tmp (is the registry volume mounted at the same path in the job?)");
  }
  status_.result = nlohmann::json::object();
  if (file_exists(job_.dir + "/harden.json")) {
    status_.result = nlohmann::json::parse(read_file(job_.dir + "/harden.json"), nullptr, false);
    if (status_.result.is_discarded()) status_.result = nlohmann::json::object();
  }
  finish(JobStatus::Phase::kSucceeded, "");
  status_.progress = "done";
}

void KubernetesRunner::finish(JobStatus::Phase phase, const std::string& error) {
  finished_ = true;
  status_.phase = phase;
  status_.error = error;
  if (!error.empty()) status_.progress = error;
}

void KubernetesRunner::cancel(double deadline_s) {
  if (!started_ || finished_) return;
  const auto until = Clock::now() + std::chrono::duration<double>(deadline_s);
  const auto left_s = [&until] {
    return std::max(0.1, std::chrono::duration<double>(until - Clock::now()).count());
  };
  const auto del = kubectl_.run({"delete", policy_.job_kind, name_, "--wait=false", "--ignore-not-found"}, "",
                                std::min(left_s(), policy_.timeout_s));
  bool gone = false;
  while (!gone && Clock::now() < until) {
    const auto r = kubectl_.run({"get", policy_.job_kind, name_, "-o", "name"}, "", std::min(left_s(), policy_.timeout_s));
    gone = r.not_found();
    if (!gone) std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  if (gone) return finish(JobStatus::Phase::kCancelled, "cancelled");
  finish(JobStatus::Phase::kCancelled,
         (del.ok() ? kind_name_ + " " + name_ + " deleted but still present after the " : "delete failed (" + del.describe() + "); gave up after the ") +
             std::to_string(deadline_s) + " s deadline");
}

// --- promotion ----------------------------------------------------------------------------------

InferenceServicePromoter::InferenceServicePromoter(KubernetesPolicy policy, std::string model, CancelFlag cancel)
    : policy_(std::move(policy)),
      model_(std::move(model)),
      kubectl_(policy_.kubectl, policy_.namespace_name, policy_.timeout_s, std::move(cancel)) {
  if (policy_.inference_service.empty()) throw invalid_argument("policy.kubernetes.inference_service is empty");
}

std::string InferenceServicePromoter::render(int64_t version, int64_t canary_percent) const {
  TemplateValues v(policy_.variables.begin(), policy_.variables.end());
  v["NAMESPACE"] = policy_.namespace_name;
  v["ISVC_NAME"] = policy_.inference_service;
  v["MODEL_NAME"] = model_;
  v["MODEL_REF"] = std::to_string(version);
  v["CANARY_PERCENT"] = std::to_string(canary_percent);
  const auto text = render_manifests(policy_.variables_file(), {policy_.isvc_template()}, v);
  // The documents, split where the renderer and the template put them: a line "---".
  std::vector<std::string> docs{""};
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);) {
    if (line == "---") {
      docs.emplace_back();
    } else {
      docs.back() += line + "\n";
    }
  }
  for (const auto& d : docs) {
    const auto node = YAML::Load(d);
    if (node.IsMap() && node["kind"] && node["kind"].as<std::string>() == "InferenceService") return d;
  }
  throw data_format(policy_.isvc_template() + ": no InferenceService document");
}

nlohmann::json InferenceServicePromoter::apply(int64_t version, int64_t canary_percent) const {
  const auto r = kubectl_.run({"apply", "-f", "-"}, render(version, canary_percent));
  if (!r.ok()) {
    throw unavailable("cannot update InferenceService " + policy_.inference_service + " to version " +
                      std::to_string(version) + " at " + std::to_string(canary_percent) + "%: " + r.describe());
  }
  return {{"inference_service", policy_.inference_service},
          {"namespace", policy_.namespace_name},
          {"model_ref", std::to_string(version)},
          {"canary_percent", canary_percent},
          {"kubectl", last_line(r.out)}};
}

void check_kubernetes_setup(const Policy& p, const std::string& model) {
  const auto& policy = p.kubernetes;
  KubernetesRunner runner(policy);  // finds kubectl
  HardenJob job;
  job.policy = p.hardening;
  job.id = "job-0";
  job.dir = "/var/lib/bulwark/registry/guard/jobs/job-0";
  job.base_model = "/var/lib/bulwark/registry/models/base.pt";
  job.out = job.dir + "/candidate.pt";
  runner.render_job(job);
  if (!policy.inference_service.empty()) InferenceServicePromoter(policy, model).render(1, policy.canary_percent);
}

}  // namespace bulwark::control
