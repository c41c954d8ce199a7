// The guard's Kubernetes mode without a cluster: a fake kubectl (fake_kubectl.sh) logs every call
// and answers from status files the test writes, or runs the job's own command line locally. The
// renderer, run as `bulwark deploy render`, fills every template and writes the outputs (escapes,
// errors) that deploy/render.py, its Python twin until issue 33, wrote; the rendered jobs
// pass the upstream schemas and run harden_argv's flags; the runner follows the conditions, and
// cancels with a delete; a whole loop hardens in a "TrainJob" and moves the InferenceService
// 10 % -> 100 %, or back to the previous version on rollback; bad policies name the key.
#include <sys/stat.h>

#include <cstdlib>
#include <map>
#include <sstream>

#include "control/loop_fixture.h"

namespace bulwark::testing {
namespace {

const std::string kTests = BULWARK_TESTS_DIR;
const std::string kRepo = fs::path(kTests).parent_path().string();
const std::string kDeploy = kRepo + "/deploy";

// Every manifest template in deploy/ (not variables.yaml, not the schemas).
std::vector<std::string> deploy_templates() {
  std::vector<std::string> out;
  for (const auto& e : fs::recursive_directory_iterator(kDeploy)) {
    const auto p = e.path().string();
    if (e.is_regular_file() && (e.path().extension() == ".yaml" || e.path().extension() == ".yml") &&
        p != kDeploy + "/variables.yaml" && p.find("/schemas/") == std::string::npos) {
      out.push_back(p);
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::string shell_quote(const std::string& s) {
  std::string out = "'";
  for (const char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

// `bulwark deploy render ARGS...`: stdout (exit 0), or stderr without "error: " (exit 2).
CommandResult deploy_render(const std::vector<std::string>& args) {
  std::string cmd = std::string(BULWARK_BIN) + " deploy render";
  for (const auto& a : args) cmd += " " + shell_quote(a);
  return run_command(cmd);
}

std::vector<std::string> set_args(const control::TemplateValues& given) {
  std::vector<std::string> out;
  for (const auto& [k, v] : given) {
    out.push_back("--set");
    out.push_back(k + "=" + v);
  }
  return out;
}

std::string render_error(const std::vector<std::string>& files, const control::TemplateValues& given) {
  try {
    control::render_manifests(kDeploy + "/variables.yaml", files, given);
  } catch (const Error& e) {
    return e.what();
  }
  return "rendered";
}

// The fake kubectl in a fresh directory, with its state directory in the environment.
struct FakeKubectl {
  TempDir dir;
  std::string bin = dir.file("kubectl"), state = dir.file("state");
  FakeKubectl() {
    fs::copy_file(kTests + "/control/fake_kubectl.sh", bin);
    ::chmod(bin.c_str(), 0755);
    ::setenv("FAKE_KUBECTL_DIR", state.c_str(), 1);
    ::setenv("FAKE_KUBECTL_BULWARK", BULWARK_BIN, 1);
    ::unsetenv("FAKE_KUBECTL_RUN");
    ::unsetenv("FAKE_KUBECTL_FAIL");
  }
  ~FakeKubectl() {
    ::unsetenv("FAKE_KUBECTL_RUN");
    ::unsetenv("FAKE_KUBECTL_FAIL");
  }
  int calls() const { return file_exists(state + "/count") ? std::stoi(read_file(state + "/count")) : 0; }
  std::vector<std::string> argv(int n) const {
    std::vector<std::string> out;
    std::istringstream in(read_file(state + "/calls/" + std::to_string(n) + ".args"));
    for (std::string line; std::getline(in, line);) out.push_back(line);
    return out;
  }
  std::string stdin_of(int n) const { return read_file(state + "/calls/" + std::to_string(n) + ".stdin"); }
  // The calls whose argv starts with `prefix`, by number.
  std::vector<int> find(const std::vector<std::string>& prefix) const {
    std::vector<int> out;
    for (int i = 1; i <= calls(); ++i) {
      const auto a = argv(i);
      if (a.size() >= prefix.size() && std::equal(prefix.begin(), prefix.end(), a.begin())) out.push_back(i);
    }
    return out;
  }
  void set_status(const std::string& name, const json& status) const {
    atomic_write_file(state + "/status/" + name + ".json", json{{"status", status}}.dump());
  }
};

control::KubernetesPolicy kube_policy(const FakeKubectl& k) {
  control::KubernetesPolicy p;
  p.kubectl = k.bin;
  p.namespace_name = "ml-prod";
  p.templates = kDeploy;
  p.variables = {{"IMAGE", "registry.example.com/bulwark:1.2.3"}};
  p.timeout_s = 20;
  return p;
}

control::HardenJob kube_job(const TempDir& dir, const std::string& key) {
  control::HardenJob job;
  job.id = "job-1767225600";
  job.dir = dir.file("jobs/job-1767225600");
  fs::create_directories(job.dir);
  job.base_model = dir.file("v1.pt");
  job.out = job.dir + "/candidate.pt";
  job.policy = small_policy(key).hardening;
  job.policy.limit = 0;
  return job;
}

// Schema errors of every document in `yaml_text`, by tests/deploy/schema_check.py ("" when none).
std::string schema_errors(const TempDir& dir, const std::string& yaml_text) {
  const auto path = dir.file("rendered.yaml");
  std::ofstream(path) << yaml_text;
  const std::string script =
      "import sys, yaml; sys.dont_write_bytecode = True; sys.path.insert(0, sys.argv[1]); "
      "from schema_check import Schemas; s = Schemas(); "
      "errs = [e for d in yaml.safe_load_all(open(sys.argv[2])) if d for e in s.errors(d)]; "
      "print('\\n'.join(errs)); sys.exit(1 if errs else 0)";
  const auto r = run_command(std::string(kPython) + " -c " + shell_quote(script) + " " + kTests + "/deploy " + path);
  return r.exit_code == 0 ? "" : "exit " + std::to_string(r.exit_code) + ": " + r.output;
}

// {flag: value} of the `bulwark` command in a job's shell line (up to the redirection).
std::map<std::string, std::string> job_flags(const std::string& line) {
  std::istringstream in(line);
  std::vector<std::string> tokens;
  bool on = false;
  for (std::string t; in >> t;) {
    if (t == "/usr/local/bin/bulwark") {
      on = true;
    } else if (t == ">") {
      break;
    } else if (on) {
      tokens.push_back(t);
    }
  }
  std::map<std::string, std::string> out;
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (tokens[i].rfind("--", 0) != 0 || tokens[i] == "--json") continue;
    out[tokens[i]] = i + 1 < tokens.size() ? tokens[i + 1] : "";
  }
  return out;
}

std::map<std::string, std::string> argv_flags(const std::vector<std::string>& argv) {
  std::map<std::string, std::string> out;
  for (size_t i = 0; i + 1 < argv.size(); ++i) {
    if (argv[i].rfind("--", 0) == 0 && argv[i] != "--json") out[argv[i]] = argv[i + 1];
  }
  return out;
}

template <typename Pred>
bool within(double seconds, Pred pred) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  while (std::chrono::steady_clock::now() < until) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return pred();
}

// --- the renderer -----------------------------------------------------------------------------

TEST(KubeManifest, DeployRenderFillsEveryTemplateAsTheGuardDoes) {
  const control::TemplateValues samples{
      {"ADMIN_TOKEN_SHA256", std::string(64, 'a')}, {"CLIENT_TOKEN_SHA256", std::string(64, 'b')},
      {"OPERATOR_PUB_B64", "b3BlcmF0b3IK"}, {"AUDIT_LOG_PUB_B64", "bG9nCg=="}};
  auto canary = samples;
  canary.insert({{"MODEL_REF", "7"}, {"CANARY_PERCENT", "10"}, {"JOB_NAME", "job-1767225600"},
                 {"JOB_DIR", "/var/lib/bulwark/registry/guard/jobs/job-1767225600"}, {"REGISTRY_PVC", "pvc-$${x}"},
                 {"IMAGE", "registry.example.com/ml/bulwark@sha256:" + std::string(64, 'c')}, {"ISVC_NAME", "x-${MODEL_NAME}"}});
  const auto files = deploy_templates();
  ASSERT_GE(files.size(), 12u);
  for (const auto* given : std::vector<const control::TemplateValues*>{&samples, &canary}) {
    auto args = set_args(*given);
    args.insert(args.end(), files.begin(), files.end());
    const auto cli = deploy_render(args);  // all at once: joined by ---, the variables found above them
    ASSERT_EQ(cli.exit_code, 0) << cli.output;
    EXPECT_EQ(cli.output, control::render_manifests(kDeploy + "/variables.yaml", files, *given));
    if (given == &samples) {
      EXPECT_EQ(cli.output.find("${"), std::string::npos) << "a placeholder left";
    }
    const std::string image = given->count("IMAGE") ? given->at("IMAGE") : "bulwark:0.1.0";  // variables.yaml's default
    EXPECT_NE(cli.output.find("image: " + image + "\n"), std::string::npos);
  }
  // The canary's values reach the InferenceService; a default that names another variable follows it.
  auto args = set_args(canary);
  args.push_back(kDeploy + "/kserve/inferenceservice.yaml");
  YAML::Node isvc;
  for (const auto& doc : YAML::LoadAll(deploy_render(args).output)) {
    if (doc["kind"].as<std::string>() == "InferenceService") isvc = doc;
  }
  ASSERT_TRUE(isvc) << "no InferenceService rendered";
  EXPECT_EQ(isvc["metadata"]["name"].as<std::string>(), "x-fashion");  // ${MODEL_NAME} in a given value, filled in
  EXPECT_EQ(isvc["spec"]["predictor"]["canaryTrafficPercent"].as<int>(), 10);

  // Escapes and odd placeholders: the outputs deploy/render.py's regular expression gave.
  TempDir dir;
  const auto odd = dir.file("odd.yaml");
  std::ofstream(odd) << "\n\na: $${LITERAL} $$${NAMESPACE} $ {X} ${MODEL_NAME}${ISVC_NAME}$\n"
                     << "c: $${\nd: ${NAMESPACE}}\n\n\n";
  const auto r = deploy_render({"--variables", kDeploy + "/variables.yaml", "--set", "MODEL_NAME=m", odd});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output, "a: ${LITERAL} $${NAMESPACE} $ {X} mm$\nc: ${\nd: ${NAMESPACE}}\n");
}

TEST(KubeManifest, DeployRenderPinsTheImageByDigest) {
  const std::string digest = "sha256:" + std::string(64, 'e');
  TempDir dir;
  const auto digest_file = dir.file("digest");
  std::ofstream(digest_file) << digest << "\n";  // as make image writes build/image/digest
  const auto file = kDeploy + "/kserve/servingruntime.yaml";
  for (const auto& [given, expected] : std::vector<std::pair<std::string, std::string>>{
           {"", "bulwark@" + digest},  // the default IMAGE, bulwark:0.1.0
           {"registry.example.com:5000/ml/bulwark:0.2", "registry.example.com:5000/ml/bulwark@" + digest},
           {"localhost:5000/bulwark", "localhost:5000/bulwark@" + digest},
           {"r.example.com/b@sha256:" + std::string(64, '1'), "r.example.com/b@" + digest}}) {
    std::vector<std::string> args{"--image-digest", digest_file, file};
    if (!given.empty()) args.insert(args.begin(), {"--set", "IMAGE=" + given});
    const auto r = deploy_render(args);
    ASSERT_EQ(r.exit_code, 0) << r.output;
    EXPECT_NE(r.output.find("image: " + expected + "\n"), std::string::npos) << given << "\n" << r.output;
  }
  // A malformed digest, a tag-only reference, and a digest file that is not one: refused, naming the flag.
  for (const auto& [args, says] : std::vector<std::pair<std::vector<std::string>, std::string>>{
           {{"--image-digest", "sha256:ABC", file}, "expected sha256: and 64 lower-case hex digits"},
           {{"--set", "IMAGE=:tag", "--image-digest", digest, file}, "names no repository"},
           {{"--image-digest", kDeploy + "/variables.yaml", file}, "expected sha256:"},
           {{"--image-digest", "/nonexistent", file}, "neither sha256:<hex> nor a file"}}) {
    const auto r = deploy_render(args);
    EXPECT_EQ(r.exit_code, 2) << r.output;
    EXPECT_NE(r.output.find(says), std::string::npos) << r.output;
  }
  // No variables.yaml at or above the template: refused, naming --variables.
  const auto lone = dir.file("lone.yaml");
  std::ofstream(lone) << "a: ${IMAGE}\n";
  const auto r = deploy_render({lone});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("give --variables FILE"), std::string::npos) << r.output;
}

TEST(KubeManifest, ErrorsNameTheFileTheVariableAndTheFix) {
  TempDir dir;
  const auto unknown = dir.file("unknown.yaml"), malformed = dir.file("malformed.yaml");
  std::ofstream(unknown) << "image: ${IMAGE}\nname: ${NO_SUCH_VARIABLE}\n";
  std::ofstream(malformed) << "name: ${lower}\n";
  const std::string vars = kDeploy + "/variables.yaml";
  // The messages deploy/render.py gave for the same cases.
  const std::vector<std::tuple<std::vector<std::string>, control::TemplateValues, std::string>> cases{
      {{unknown}, {}, unknown + ": unknown placeholder ${NO_SUCH_VARIABLE} (declare it in deploy/variables.yaml)"},
      {{malformed}, {}, malformed + ": malformed placeholder '${lower}'"},
      {{kDeploy + "/base/tokens-secret.yaml"}, {},
       "ADMIN_TOKEN_SHA256 is required: SHA-256 of the operators' admin token (`bulwark token --id ops --roles "
       "infer,admin --json`); the guard and repository API need it (--set ADMIN_TOKEN_SHA256=...)"},
      {{kDeploy + "/base/namespace.yaml"}, {{"NOPE", "1"}, {"ALSO_NOT", "2"}},
       "unknown variables ['ALSO_NOT', 'NOPE'] (see deploy/variables.yaml)"},
  };
  for (const auto& [files, given, expected] : cases) {
    EXPECT_EQ(render_error(files, given), expected);
    auto args = set_args(given);
    args.insert(args.end(), {"--variables", vars});
    args.insert(args.end(), files.begin(), files.end());
    const auto r = deploy_render(args);
    EXPECT_EQ(r.exit_code, 2) << r.output;
    EXPECT_EQ(r.output, "error: " + expected + "\n");
  }
}

// --- the runner ---------------------------------------------------------------------------------

TEST(KubeRunner, TheRenderedJobsPassTheirSchemasAndRunTheSubprocessRunnersFlags) {
  FakeKubectl k;
  LoopRegistry r;
  const auto job = kube_job(r.dir, r.key);
  const auto expected = argv_flags(control::harden_argv(job));
  for (const std::string kind : {"trainjob", "pytorchjob"}) {
    auto p = kube_policy(k);
    p.job_kind = kind;
    control::KubernetesRunner runner(p);
    const auto text = runner.render_job(job);
    EXPECT_EQ(schema_errors(r.dir, text), "") << text;
    const auto doc = YAML::Load(text);
    EXPECT_EQ(doc["metadata"]["name"].as<std::string>(), "job-1767225600");
    EXPECT_EQ(doc["metadata"]["namespace"].as<std::string>(), "ml-prod");
    const auto line = kind == "trainjob"
                          ? doc["spec"]["trainer"]["args"][0].as<std::string>()
                          : doc["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]["args"][0]
                                .as<std::string>();
    auto flags = job_flags(line);
    EXPECT_EQ(flags.erase("--threads"), 1u);
    EXPECT_EQ(flags, expected) << line;
    EXPECT_EQ(flags["--out"], job.dir + "/candidate.pt.tmp");  // what the runner renames to job.out
    const auto deadline = kind == "trainjob" ? doc["spec"]["activeDeadlineSeconds"]
                                             : doc["spec"]["runPolicy"]["activeDeadlineSeconds"];
    EXPECT_EQ(deadline.as<int>(), 5 * 60 + 300);
  }
  // A job whose out is elsewhere is refused: the template decides where the candidate goes.
  auto moved = job;
  moved.out = r.dir.file("elsewhere.pt");
  control::KubernetesRunner runner(kube_policy(k));
  EXPECT_THROW(runner.render_job(moved), Error);
  auto unsafe = job;
  unsafe.policy.data = "/data; rm -rf /";
  try {
    runner.render_job(unsafe);
    ADD_FAILURE() << "a data path with shell characters was rendered";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("HARDEN_DATA"), std::string::npos) << e.what();
  }
}

TEST(KubeRunner, FollowsTheConditionsFromSubmittedToSucceeded) {
  FakeKubectl k;
  LoopRegistry r;
  const auto job = kube_job(r.dir, r.key);
  control::KubernetesRunner runner(kube_policy(k), /*poll_interval_s=*/0);
  runner.start(job);
  ASSERT_EQ(k.calls(), 1);
  EXPECT_EQ(k.argv(1), (std::vector<std::string>{"-n", "ml-prod", "apply", "-f", "-"}));
  EXPECT_EQ(k.stdin_of(1), runner.render_job(job));
  auto s = runner.poll();
  EXPECT_EQ(s.phase, control::JobStatus::Phase::kRunning) << s.error;
  EXPECT_NE(s.progress.find("no conditions yet"), std::string::npos) << s.progress;
  EXPECT_EQ(k.argv(2), (std::vector<std::string>{"-n", "ml-prod", "get", "trainjob", "job-1767225600", "-o", "json"}));
  k.set_status("job-1767225600", {{"conditions", {{{"type", "Created"}, {"status", "True"}},
                                                  {{"type", "Running"}, {"status", "True"}, {"message", "1/1 nodes"}}}}});
  s = runner.poll();
  EXPECT_EQ(s.phase, control::JobStatus::Phase::kRunning);
  EXPECT_EQ(s.progress, "TrainJob job-1767225600: Running: 1/1 nodes");
  // A PyTorchJob's success condition ("Succeeded") does not end a TrainJob; "Complete" does.
  std::ofstream(job.out + ".tmp") << "model";
  std::ofstream(job.dir + "/harden.json") << R"({"clean_accuracy": 0.8})";
  k.set_status("job-1767225600", {{"conditions", {{{"type", "Succeeded"}, {"status", "True"}}}}});
  EXPECT_EQ(runner.poll().phase, control::JobStatus::Phase::kRunning);
  k.set_status("job-1767225600", {{"conditions", {{{"type", "Complete"}, {"status", "False"}}}}});
  EXPECT_EQ(runner.poll().phase, control::JobStatus::Phase::kRunning);
  k.set_status("job-1767225600", {{"conditions", {{{"type", "Complete"}, {"status", "True"}}}}});
  s = runner.poll();
  ASSERT_EQ(s.phase, control::JobStatus::Phase::kSucceeded) << s.error;
  EXPECT_EQ(s.result["clean_accuracy"], 0.8);
  EXPECT_TRUE(fs::exists(job.out));
  EXPECT_FALSE(fs::exists(job.out + ".tmp"));
  const int calls = k.calls();
  runner.cancel(1);  // a finished job is left as it is
  EXPECT_EQ(runner.poll().phase, control::JobStatus::Phase::kSucceeded);
  EXPECT_EQ(k.calls(), calls);
}

TEST(KubeRunner, ReportsAFailedJobAMissingModelAndARefusedApply) {
  FakeKubectl k;
  LoopRegistry r;
  const auto job = kube_job(r.dir, r.key);
  auto p = kube_policy(k);
  p.job_kind = "pytorchjob";
  {
    control::KubernetesRunner runner(p, 0);
    runner.start(job);
    k.set_status("job-1767225600", {{"conditions", {{{"type", "Failed"}, {"status", "True"}, {"reason", "OOMKilled"},
                                                     {"message", "pod bulwark-master-0 was killed"}}}}});
    const auto s = runner.poll();
    EXPECT_EQ(s.phase, control::JobStatus::Phase::kFailed);
    EXPECT_EQ(s.error, "PyTorchJob job-1767225600 failed (OOMKilled): pod bulwark-master-0 was killed");
    EXPECT_EQ(k.argv(2)[3], "pytorchjob");
  }
  {
    control::KubernetesRunner runner(p, 0);
    runner.start(job);
    k.set_status("job-1767225600", {{"conditions", {{{"type", "Succeeded"}, {"status", "True"}}}}});
    const auto s = runner.poll();  // no candidate.pt.tmp on the "shared volume"
    EXPECT_EQ(s.phase, control::JobStatus::Phase::kFailed);
    EXPECT_NE(s.error.find("left no model at " + job.out + ".tmp"), std::string::npos) << s.error;
  }
  {
    control::KubernetesRunner runner(p, 0);
    runner.start(job);
    fs::remove(k.state + "/status/job-1767225600.json");
    const auto s = runner.poll();
    EXPECT_EQ(s.phase, control::JobStatus::Phase::kFailed);
    EXPECT_NE(s.error.find("is gone"), std::string::npos) << s.error;
  }
  ::setenv("FAKE_KUBECTL_FAIL", "apply", 1);
  control::KubernetesRunner runner(p, 0);
  runner.start(job);
  const auto s = runner.poll();
  EXPECT_EQ(s.phase, control::JobStatus::Phase::kFailed);
  EXPECT_NE(s.error.find("Forbidden"), std::string::npos) << s.error;
  EXPECT_NE(s.error.find("kubectl -n ml-prod apply -f - exited 1"), std::string::npos) << s.error;
}

TEST(KubeRunner, CancelDeletesTheJobAndWaitsForIt) {
  FakeKubectl k;
  LoopRegistry r;
  const auto job = kube_job(r.dir, r.key);
  control::KubernetesRunner runner(kube_policy(k), 0);
  runner.start(job);
  ASSERT_EQ(runner.poll().phase, control::JobStatus::Phase::kRunning);
  const auto t0 = std::chrono::steady_clock::now();
  runner.cancel(3);
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 3.0);
  const auto deletes = k.find({"-n", "ml-prod", "delete"});
  ASSERT_EQ(deletes.size(), 1u);
  EXPECT_EQ(k.argv(deletes[0]), (std::vector<std::string>{"-n", "ml-prod", "delete", "trainjob", "job-1767225600",
                                                          "--wait=false", "--ignore-not-found"}));
  const auto s = runner.poll();
  EXPECT_EQ(s.phase, control::JobStatus::Phase::kCancelled);
  EXPECT_EQ(s.error, "cancelled");
  // A delete the API server refuses: cancel gives up at its deadline and says so.
  control::KubernetesRunner stuck(kube_policy(k), 0);
  stuck.start(job);
  ::setenv("FAKE_KUBECTL_FAIL", "delete", 1);
  const auto t1 = std::chrono::steady_clock::now();
  stuck.cancel(1);
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count(), 2.5);
  EXPECT_EQ(stuck.poll().phase, control::JobStatus::Phase::kCancelled);
  EXPECT_NE(stuck.poll().error.find("delete failed"), std::string::npos) << stuck.poll().error;
}

TEST(KubeRunner, KubectlIsBoundedInTimeAndFoundOnPath) {
  TempDir dir;
  const auto slow = dir.file("kubectl");
  std::ofstream(slow) << "#!/bin/sh\necho started\nexec sleep 30\n";
  ::chmod(slow.c_str(), 0755);
  const control::Kubectl k(slow, "ns", 0.5);
  const auto t0 = std::chrono::steady_clock::now();
  const auto res = k.run({"get", "pods"});
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 3.0);
  EXPECT_TRUE(res.timed_out);
  EXPECT_NE(res.describe().find("kubectl -n ns get pods timed out"), std::string::npos) << res.describe();
  try {
    control::Kubectl("no-such-kubectl-binary", "ns", 1);
    ADD_FAILURE() << "a kubectl missing from PATH was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("policy.kubernetes.kubectl"), std::string::npos) << e.what();
  }
}

// --- policy -------------------------------------------------------------------------------------

TEST(KubePolicy, BadValuesAreRefusedNamingTheKeyAndTheLimit) {
  const auto error_of = policy_error;
  const std::string h = "hardening: {key: k, runner: kubernetes}\n";
  EXPECT_EQ(error_of(h + "kubernetes: {namespace: ml, job_kind: pytorchjob, inference_service: fashion, canary_percent: 5,"
                         " variables: {IMAGE: 'r/b:1', MIN_REPLICAS: 2}}"),
            "accepted");
  EXPECT_NE(error_of("hardening: {key: k, runner: k8s}").find("policy.hardening.runner must be thread, subprocess or kubernetes"),
            std::string::npos);
  EXPECT_NE(error_of(h + "kubernetes: {canary_percent: 100}").find("policy.kubernetes.canary_percent must be in [1, 99]"),
            std::string::npos);
  EXPECT_NE(error_of(h + "kubernetes: {canary_percent: 0}").find("policy.kubernetes.canary_percent"), std::string::npos);
  EXPECT_NE(error_of(h + "kubernetes: {job_kind: job}").find("policy.kubernetes.job_kind must be trainjob or pytorchjob"),
            std::string::npos);
  EXPECT_NE(error_of(h + "kubernetes: {namespace: ML_Prod}").find("policy.kubernetes.namespace must be an RFC 1123 label"),
            std::string::npos);
  EXPECT_NE(error_of(h + "kubernetes: {namespace: " + std::string(64, 'a') + "}").find("policy.kubernetes.namespace"),
            std::string::npos);
  EXPECT_NE(error_of(h + "kubernetes: {inference_service: -fashion}").find("policy.kubernetes.inference_service"),
            std::string::npos);
  EXPECT_NE(error_of(h + "kubernetes: {variables: {JOB_DIR: /x}}").find("policy.kubernetes.variables must be free of JOB_DIR"),
            std::string::npos);
  EXPECT_NE(error_of(h + "kubernetes: {variables: {image: x}}").find("policy.kubernetes.variables"), std::string::npos);
  EXPECT_NE(error_of(h + "kubernetes: {timeout_s: 0}").find("policy.kubernetes.timeout_s must be in [1, 600]"),
            std::string::npos);
  EXPECT_NE(error_of(h + "kubernetes: {kubeconfig: x}").find("unknown key 'kubeconfig'"), std::string::npos);
  EXPECT_NE(error_of("hardening: {key: k, runner: kubernetes, limit: 1000}").find("policy.hardening.limit must be 0 with runner kubernetes"),
            std::string::npos);
  EXPECT_EQ(error_of("hardening: {key: k, runner: subprocess, limit: 1000}"), "accepted");
}

// --- the whole loop -----------------------------------------------------------------------------

// A Kubernetes-mode policy on a small 28x28 dataset directory (the templates train on the whole
// split: no limit), with the fake kubectl running each job's command locally.
control::Policy kube_loop_policy(const LoopRegistry& r, const FakeKubectl& k) {
  const auto data = r.dir.file("data");
  fs::create_directories(data);
  write_idx_dataset(data, 1200, 28, 28);
  auto p = small_policy(r.key);
  p.hardening.limit = 0;
  p.hardening.data = data;
  p.hardening.runner = "kubernetes";
  p.gate.min_robust_accuracy = 0;  // let any candidate through: the promotion is under test
  p.gate.max_clean_drop = 1;
  p.kubernetes = kube_policy(k);
  p.kubernetes.inference_service = "fashion";
  p.kubernetes.canary_percent = 10;
  ::setenv("FAKE_KUBECTL_RUN", "1", 1);
  return p;
}

// (MODEL_REF's version, canaryTrafficPercent) of each InferenceService the guard applied.
std::vector<std::pair<std::string, int>> isvc_applies(const FakeKubectl& k) {
  std::vector<std::pair<std::string, int>> out;
  for (const int n : k.find({"-n", "ml-prod", "apply", "-f", "-"})) {
    const auto doc = YAML::Load(k.stdin_of(n));
    if (doc["kind"].as<std::string>() != "InferenceService") continue;
    const auto arg = doc["spec"]["predictor"]["model"]["args"][0].as<std::string>();
    out.emplace_back(arg.substr(arg.find('@') + 1), doc["spec"]["predictor"]["canaryTrafficPercent"].as<int>());
  }
  return out;
}

std::vector<json> isvc_audit(const LoopRegistry& r) {
  std::vector<json> out;
  for (const auto& e : r.audit()) {
    if (e.action == "guard.inferenceservice") out.push_back(json::parse(e.details));
  }
  return out;
}

TEST(KubeLoop, HardensInAJobThenMovesTheInferenceServiceFromTenToAllTraffic) {
  FakeKubectl k;
  LoopRegistry r;
  auto policy = kube_loop_policy(r, k);
  policy.watch.window_s = 1;
  Loop loop(r, policy);
  loop.labelled_traffic(10, /*agree=*/true, 0);  // the replaced version's reference
  loop.controller->request_hardening("test");
  ASSERT_TRUE(loop.wait_for(control::State::kWatching, 300 * kSanitizerSlowdown)) << loop.controller->status().dump(2);
  loop.labelled_traffic(10, /*agree=*/true, 100);  // as good: kept
  ASSERT_TRUE(loop.wait_for(control::State::kStable, 60)) << loop.controller->status().dump(2);
  EXPECT_EQ(r.production(), 2);
  // The job: one TrainJob applied in the namespace, its schema-valid manifest, followed by gets.
  const auto applies = k.find({"-n", "ml-prod", "apply", "-f", "-"});
  ASSERT_EQ(applies.size(), 3u);
  const auto job = YAML::Load(k.stdin_of(applies[0]));
  EXPECT_EQ(job["kind"].as<std::string>(), "TrainJob");
  const auto name = job["metadata"]["name"].as<std::string>();
  EXPECT_FALSE(k.find({"-n", "ml-prod", "get", "trainjob", name, "-o", "json"}).empty());
  EXPECT_EQ(schema_errors(r.dir, k.stdin_of(applies[0])), "");
  // The InferenceService: the candidate at 10 %, then at 100 % once the watch passed.
  EXPECT_EQ(isvc_applies(k), (std::vector<std::pair<std::string, int>>{{"2", 10}, {"2", 100}}));
  EXPECT_EQ(schema_errors(r.dir, k.stdin_of(applies[1])), "");
  const auto audit = isvc_audit(r);
  ASSERT_EQ(audit.size(), 2u);
  EXPECT_EQ(audit[0]["step"], "canary");
  EXPECT_EQ(audit[0]["canary_percent"], 10);
  EXPECT_EQ(audit[1]["step"], "full");
  EXPECT_EQ(audit[1]["model_ref"], "2");
  EXPECT_EQ(audit[1]["inference_service"], "fashion");
  EXPECT_TRUE(r.audit_ok());
  EXPECT_TRUE(k.find({"-n", "ml-prod", "delete"}).empty());  // nothing cancelled
}

TEST(KubeLoop, ARollbackPinsTheInferenceServiceToThePreviousVersion) {
  FakeKubectl k;
  LoopRegistry r;
  auto policy = kube_loop_policy(r, k);
  policy.watch.window_s = 8;
  Loop loop(r, policy);
  loop.labelled_traffic(20, /*agree=*/true, 0);  // version 1: 100 % on its feedback
  loop.controller->request_hardening("test");
  ASSERT_TRUE(loop.wait_for(control::State::kWatching, 300 * kSanitizerSlowdown)) << loop.controller->status().dump(2);
  EXPECT_EQ(isvc_applies(k), (std::vector<std::pair<std::string, int>>{{"2", 10}}));
  loop.labelled_traffic(20, /*agree=*/false, 100);  // version 2 is always wrong
  ASSERT_TRUE(loop.wait_for(control::State::kRolledBack, 30)) << loop.controller->status().dump(2);
  EXPECT_EQ(r.production(), 1);
  EXPECT_EQ(isvc_applies(k), (std::vector<std::pair<std::string, int>>{{"2", 10}, {"1", 100}}));
  const auto audit = isvc_audit(r);
  ASSERT_EQ(audit.size(), 2u);
  EXPECT_EQ(audit[1]["step"], "rollback");
  EXPECT_EQ(audit[1]["model_ref"], "1");
  EXPECT_TRUE(r.audit_ok());
}

TEST(KubeLoop, AJobThatFailsInTheClusterFailsTheLoopWithItsMessage) {
  FakeKubectl k;
  LoopRegistry r;
  auto policy = kube_loop_policy(r, k);
  policy.hardening.data = r.dir.file("no-such-data");  // bulwark harden exits non-zero in the "pod"
  Loop loop(r, policy);
  loop.controller->request_hardening("test");
  ASSERT_TRUE(within(30, [&] { return loop.controller->state() == control::State::kFailed; }))
      << loop.controller->status().dump(2);
  const auto reason = loop.controller->status()["reason"].get<std::string>();
  EXPECT_NE(reason.find("TrainJob"), std::string::npos) << reason;
  EXPECT_NE(reason.find("BackoffLimitExceeded"), std::string::npos) << reason;
  EXPECT_TRUE(isvc_applies(k).empty());
  EXPECT_EQ(r.production(), 1);
}

TEST(KubeLoop, ABadTemplateDirectoryFailsWhenTheGuardStarts) {
  FakeKubectl k;
  LoopRegistry r;
  auto policy = kube_loop_policy(r, k);
  policy.kubernetes.templates = r.dir.file("nowhere");
  serve::InferenceCore core(Loop::options(r));
  control::ControllerOptions o;
  o.registry_dir = r.reg;
  o.model = "m";
  o.served_name = "fashion";
  try {
    control::Controller c(o, policy, core);
    ADD_FAILURE() << "a missing template directory was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(r.dir.file("nowhere")), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace bulwark::testing
