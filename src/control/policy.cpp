#include "control/policy.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cmath>
#include <set>

#include "core/error.h"

namespace bulwark::control {
namespace {

// Reads `section` of `root`, refusing keys it does not know.
class Section {
 public:
  Section(const YAML::Node& root, const std::string& name, const std::string& where)
      : node_(root[name]), where_(where + "." + name) {
    if (node_ && !node_.IsMap()) throw invalid_argument(where_ + " must be a mapping");
  }
  template <typename T>
  void read(const std::string& key, T& out) {
    known_.insert(key);
    if (!node_ || !node_[key]) return;
    try {
      out = node_[key].as<T>();
    } catch (const YAML::Exception&) {
      throw invalid_argument(where_ + "." + key + ": wrong type");
    }
  }
  void done() const {
    if (!node_) return;
    for (const auto& kv : node_) {
      const auto key = kv.first.as<std::string>();
      if (!known_.count(key)) throw invalid_argument(where_ + ": unknown key '" + key + "'");
    }
  }

 private:
  YAML::Node node_;
  std::string where_;
  std::set<std::string> known_;
};

void require(bool ok, const std::string& key, const std::string& limit) {
  if (!ok) throw invalid_argument("policy." + key + " must be " + limit);
}

// An RFC 1123 label (namespaces, object names).
bool is_dns_label(const std::string& s) {
  if (s.empty() || s.size() > 63) return false;
  const auto alnum = [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); };
  if (!alnum(s.front()) || !alnum(s.back())) return false;
  return std::all_of(s.begin(), s.end(), [&](char c) { return alnum(c) || c == '-'; });
}

bool is_variable_name(const std::string& s) {
  if (s.empty() || s[0] < 'A' || s[0] > 'Z') return false;
  return std::all_of(s.begin(), s.end(), [](char c) { return (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_'; });
}

// The template variables the Kubernetes runner and promoter fill in themselves.
const std::set<std::string> kGuardSetsVariables{
    "NAMESPACE",      "JOB_NAME",     "JOB_DIR",           "BASE_MODEL",          "HARDEN_METHOD",
    "HARDEN_EPS",     "HARDEN_EPOCHS", "HARDEN_BATCH",     "HARDEN_STEPS",        "HARDEN_CLEAN_WEIGHT",
    "HARDEN_ATTACK_PRECISION",
    "HARDEN_BUDGET_MINUTES", "HARDEN_DATA", "HARDEN_VAL_FRACTION", "HARDEN_SEED", "JOB_DEADLINE_SECONDS",
    "ISVC_NAME",      "MODEL_NAME",   "MODEL_REF",         "CANARY_PERCENT"};

}  // namespace

Policy Policy::from_yaml(const YAML::Node& node, const std::string& where) {
  if (!node.IsMap()) throw invalid_argument(where + " must be a mapping");
  Policy p;
  for (const auto& kv : node) {
    const auto key = kv.first.as<std::string>();
    static const std::set<std::string> kSections{"trigger", "hardening", "gate", "watch", "kubernetes", "cooldown_s",
                                                  "max_cooldown_s"};
    if (!kSections.count(key)) throw invalid_argument(where + ": unknown key '" + key + "'");
  }
  Section t(node, "trigger", where);
  t.read("alarms", p.trigger.alarms);
  t.read("persistence_s", p.trigger.persistence_s);
  t.read("min_clients", p.trigger.min_clients);
  t.read("min_client_flag_share", p.trigger.min_client_flag_share);
  t.read("max_jobs_per_day", p.trigger.max_jobs_per_day);
  t.done();
  Section h(node, "hardening", where);
  h.read("method", p.hardening.method);
  h.read("eps", p.hardening.eps);
  h.read("epochs", p.hardening.epochs);
  h.read("limit", p.hardening.limit);
  h.read("budget_minutes", p.hardening.budget_minutes);
  h.read("data", p.hardening.data);
  h.read("runner", p.hardening.runner);
  h.read("key", p.hardening.key);
  h.read("batch", p.hardening.batch);
  h.read("pgd_steps", p.hardening.pgd_steps);
  h.read("clean_weight", p.hardening.clean_weight);
  h.read("attack_precision", p.hardening.attack_precision);
  h.read("seed", p.hardening.seed);
  h.read("detectors", p.hardening.detectors);
  h.done();
  Section g(node, "gate", where);
  g.read("n", p.gate.n);
  g.read("offset", p.gate.offset);
  g.read("attacks", p.gate.attacks);
  g.read("eps", p.gate.eps);
  g.read("max_clean_drop", p.gate.max_clean_drop);
  g.read("max_clean_drop_from_first", p.gate.max_clean_drop_from_first);
  g.read("min_robust_accuracy", p.gate.min_robust_accuracy);
  g.read("require_poison_scan", p.gate.require_poison_scan);
  g.read("pgd_steps", p.gate.pgd_steps);
  g.done();
  Section w(node, "watch", where);
  w.read("window_s", p.watch.window_s);
  w.read("max_window_s", p.watch.max_window_s);
  w.read("min_labellers", p.watch.min_labellers);
  w.read("max_accuracy_drop", p.watch.max_accuracy_drop);
  w.read("min_feedback_accuracy", p.watch.min_feedback_accuracy);
  w.read("rollback_on_accuracy_alarm", p.watch.rollback_on_accuracy_alarm);
  w.read("min_feedback", p.watch.min_feedback);
  w.done();
  Section k(node, "kubernetes", where);
  k.read("kubectl", p.kubernetes.kubectl);
  k.read("namespace", p.kubernetes.namespace_name);
  k.read("job_kind", p.kubernetes.job_kind);
  k.read("templates", p.kubernetes.templates);
  k.read("variables", p.kubernetes.variables);
  k.read("inference_service", p.kubernetes.inference_service);
  k.read("canary_percent", p.kubernetes.canary_percent);
  k.read("timeout_s", p.kubernetes.timeout_s);
  k.done();
  const auto scalar = [&where](const YAML::Node& value, const char* key, double& out) {
    if (!value) return;
    try {
      out = value.as<double>();
    } catch (const YAML::Exception&) {
      throw invalid_argument(where + "." + key + ": wrong type");
    }
  };
  scalar(node["cooldown_s"], "cooldown_s", p.cooldown_s);
  scalar(node["max_cooldown_s"], "max_cooldown_s", p.max_cooldown_s);
  p.validate();
  return p;
}

void Policy::validate() const {
  static const std::set<std::string> kAlarms{"detector_rate", "confidence", "class_mix", "accuracy"};
  require(!trigger.alarms.empty(), "trigger.alarms", "a non-empty list");
  for (const auto& a : trigger.alarms) {
    require(kAlarms.count(a) != 0, "trigger.alarms", "from detector_rate, confidence, class_mix, accuracy (got '" + a + "')");
  }
  require(trigger.persistence_s >= 0 && trigger.persistence_s <= 3600, "trigger.persistence_s", "in [0, 3600]");
  require(trigger.min_clients >= 1 && trigger.min_clients <= 1000, "trigger.min_clients", "in [1, 1000]");
  require(trigger.min_client_flag_share > 0 && trigger.min_client_flag_share <= 1, "trigger.min_client_flag_share",
          "in (0, 1]");
  require(trigger.max_jobs_per_day >= 0 && trigger.max_jobs_per_day <= 1000, "trigger.max_jobs_per_day", "in [0, 1000]");
  require(hardening.method == "pgd-at" || hardening.method == "trades" || hardening.method == "fast-at",
          "hardening.method", "pgd-at, trades or fast-at");
  require(hardening.eps > 0 && hardening.eps <= 1, "hardening.eps", "in (0, 1]");
  require(hardening.epochs >= 1 && hardening.epochs <= 1000, "hardening.epochs", "in [1, 1000]");
  require(hardening.limit >= 0, "hardening.limit", ">= 0");
  require(hardening.budget_minutes > 0 && hardening.budget_minutes <= 24 * 60, "hardening.budget_minutes",
          "in (0, 1440]");
  require(hardening.runner == "thread" || hardening.runner == "subprocess" || hardening.runner == "kubernetes",
          "hardening.runner", "thread, subprocess or kubernetes");
  // The job templates run `bulwark harden` on HARDEN_DATA's whole training split (harden has no
  // "--limit 0"); the guard calibrates on the split the job trained on, so the two must agree.
  require(hardening.limit == 0 || hardening.runner != "kubernetes", "hardening.limit",
          "0 with runner kubernetes (the job templates train on the whole split: point data at a smaller one)");
  require(!hardening.key.empty(), "hardening.key", "a signing key file (bulwark keys gen): candidates are signed");
  require(hardening.batch >= 1 && hardening.batch <= 4096, "hardening.batch", "in [1, 4096]");
  require(hardening.pgd_steps >= 1 && hardening.pgd_steps <= 100, "hardening.pgd_steps", "in [1, 100]");
  require(hardening.clean_weight >= 0 && hardening.clean_weight < 1, "hardening.clean_weight", "in [0, 1)");
  require(hardening.clean_weight == 0 || hardening.method != "trades", "hardening.clean_weight",
          "0 with method trades (TRADES weighs its clean loss against beta)");
  require(hardening.attack_precision == "fp32" || hardening.attack_precision == "bf16", "hardening.attack_precision",
          "fp32 or bf16");
  require(gate.n >= 10 && gate.n <= 10000, "gate.n", "in [10, 10000]");
  require(gate.offset >= 0, "gate.offset", ">= 0");
  require(!gate.attacks.empty(), "gate.attacks", "a non-empty list");
  require(gate.eps > 0 && gate.eps <= 1, "gate.eps", "in (0, 1]");
  require(gate.max_clean_drop >= 0 && gate.max_clean_drop <= 1, "gate.max_clean_drop", "in [0, 1] (a fraction)");
  require(gate.max_clean_drop_from_first >= 0 && gate.max_clean_drop_from_first <= 1, "gate.max_clean_drop_from_first",
          "in [0, 1] (a fraction)");
  require(gate.min_robust_accuracy >= 0 && gate.min_robust_accuracy <= 1, "gate.min_robust_accuracy", "in [0, 1]");
  require(gate.pgd_steps >= 1 && gate.pgd_steps <= 1000, "gate.pgd_steps", "in [1, 1000]");
  require(watch.window_s >= 0 && watch.window_s <= 86400, "watch.window_s", "in [0, 86400]");
  require(watch.max_accuracy_drop >= 0 && watch.max_accuracy_drop <= 1, "watch.max_accuracy_drop", "in [0, 1]");
  require(watch.min_feedback_accuracy >= 0 && watch.min_feedback_accuracy <= 1, "watch.min_feedback_accuracy",
          "in [0, 1]");
  require(watch.min_feedback >= 1, "watch.min_feedback", ">= 1");
  require(watch.max_window_s == 0 || (watch.max_window_s >= watch.window_s && watch.max_window_s <= 7 * 86400),
          "watch.max_window_s", "0 (5 x window_s) or in [watch.window_s, 604800]");
  require(watch.min_labellers >= 1 && watch.min_labellers <= 100, "watch.min_labellers", "in [1, 100]");
  const auto& k = kubernetes;
  require(!k.kubectl.empty(), "kubernetes.kubectl", "a kubectl binary (a name on PATH or a path)");
  require(is_dns_label(k.namespace_name), "kubernetes.namespace",
          "an RFC 1123 label: at most 63 of a-z, 0-9 and '-', starting and ending alphanumeric (got '" +
              k.namespace_name + "')");
  require(k.job_kind == "trainjob" || k.job_kind == "pytorchjob", "kubernetes.job_kind",
          "trainjob or pytorchjob (got '" + k.job_kind + "')");
  require(!k.templates.empty(), "kubernetes.templates", "the directory holding variables.yaml, kubeflow/ and kserve/");
  for (const auto& kv : k.variables) {
    require(is_variable_name(kv.first), "kubernetes.variables",
            "a map of UPPER_SNAKE_CASE template variables (got '" + kv.first + "')");
    require(!kGuardSetsVariables.count(kv.first), "kubernetes.variables",
            "free of " + kv.first + ": the guard sets it for each job and promotion");
  }
  require(k.inference_service.empty() || is_dns_label(k.inference_service), "kubernetes.inference_service",
          "empty (no InferenceService) or an RFC 1123 label: at most 63 of a-z, 0-9 and '-', starting and ending "
          "alphanumeric (got '" + k.inference_service + "')");
  require(k.canary_percent >= 1 && k.canary_percent <= 99, "kubernetes.canary_percent", "in [1, 99]");
  require(k.timeout_s >= 1 && k.timeout_s <= 600, "kubernetes.timeout_s", "in [1, 600]");
  require(cooldown_s >= 0 && cooldown_s <= 7 * 86400, "cooldown_s", "in [0, 604800]");
  require(max_cooldown_s >= cooldown_s && max_cooldown_s <= 30 * 86400, "max_cooldown_s", "in [cooldown_s, 2592000]");
}

std::string KubernetesPolicy::job_template() const { return templates + "/kubeflow/" + job_kind + ".yaml"; }
std::string KubernetesPolicy::isvc_template() const { return templates + "/kserve/inferenceservice.yaml"; }
std::string KubernetesPolicy::variables_file() const { return templates + "/variables.yaml"; }

double HardeningPolicy::validation_fraction(int64_t train_size) const {
  if (train_size <= 0) return 0.05;
  return std::min(0.5, std::max(0.05, 400.0 / static_cast<double>(train_size)));
}

nlohmann::json Policy::to_json() const {
  return {{"trigger",
           {{"alarms", trigger.alarms}, {"persistence_s", trigger.persistence_s}, {"min_clients", trigger.min_clients},
            {"min_client_flag_share", trigger.min_client_flag_share}, {"max_jobs_per_day", trigger.max_jobs_per_day}}},
          {"hardening",
           {{"method", hardening.method}, {"eps", hardening.eps}, {"epochs", hardening.epochs},
            {"limit", hardening.limit}, {"budget_minutes", hardening.budget_minutes}, {"data", hardening.data},
            {"runner", hardening.runner}, {"key", hardening.key}, {"batch", hardening.batch},
            {"pgd_steps", hardening.pgd_steps}, {"clean_weight", hardening.clean_weight},
            {"attack_precision", hardening.attack_precision}, {"seed", hardening.seed}, {"detectors", hardening.detectors}}},
          {"gate",
           {{"n", gate.n}, {"offset", gate.offset}, {"attacks", gate.attacks}, {"eps", gate.eps},
            {"max_clean_drop", gate.max_clean_drop}, {"max_clean_drop_from_first", gate.max_clean_drop_from_first},
            {"min_robust_accuracy", gate.min_robust_accuracy},
            {"require_poison_scan", gate.require_poison_scan},
            {"pgd_steps", gate.pgd_steps}}},
          {"watch",
           {{"window_s", watch.window_s}, {"max_window_s", watch.max_window_s}, {"min_labellers", watch.min_labellers},
            {"max_accuracy_drop", watch.max_accuracy_drop},
            {"min_feedback_accuracy", watch.min_feedback_accuracy}, {"min_feedback", watch.min_feedback},
            {"rollback_on_accuracy_alarm", watch.rollback_on_accuracy_alarm}}},
          {"kubernetes",
           {{"kubectl", kubernetes.kubectl}, {"namespace", kubernetes.namespace_name}, {"job_kind", kubernetes.job_kind},
            {"templates", kubernetes.templates}, {"variables", kubernetes.variables},
            {"inference_service", kubernetes.inference_service}, {"canary_percent", kubernetes.canary_percent},
            {"timeout_s", kubernetes.timeout_s}}},
          {"cooldown_s", cooldown_s},
          {"max_cooldown_s", max_cooldown_s}};
}

}  // namespace bulwark::control
