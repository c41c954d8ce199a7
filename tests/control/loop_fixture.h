// The closed loop's test fixtures, shared by control_test.cpp and kubernetes_test.cpp: a signed
// registry with version 1 in production, a small fast policy, and a server core with the controller.
#pragma once

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <thread>

#include "control/control.h"
#include "core/digest.h"
#include "core/files.h"
#include "data/dataset.h"
#include "detect/calibration.h"
#include "detect/monitor_fit.h"
#include "registry/registry.h"
#include "train/train.h"
#include "serve/server_fixture.h"
#include "serve/server_process.h"

namespace bulwark::testing {

// Waits that only bound a failure are this much longer in the sanitizer build (make test SAN=1),
// which runs the loop 5-20x slower; ctest's per-test limit there is 900 s (tests/CMakeLists.txt).
#ifdef BULWARK_TEST_SANITIZED
inline constexpr double kSanitizerSlowdown = 3;
#else
inline constexpr double kSanitizerSlowdown = 1;
#endif

using nlohmann::json;
namespace fs = std::filesystem;

// A calibration (detectors + the monitor's reference) for `model_path`, on Fashion-MNIST.
inline std::string calibrate(const TempDir& dir, const std::string& model_path) {
  auto m = model::Model::load(model_path);
  m.set_training(false);
  const auto train = data::load_dataset("fashion-mnist", data::Split::kTrain).head(1500);
  const auto fit = train.select(torch::arange(0, 1000)), ref = train.select(torch::arange(1000, 1500));
  detect::CalibrationOptions co;
  co.detectors = {"max-softmax", "mahalanobis"};  // mahalanobis: noise, far from every class, is flagged
  auto set = detect::DetectorSet::calibrate(m, sha256_file_hex(model_path), co, fit.inputs(), fit.targets(), ref.inputs());
  set.monitor_reference() = detect::fit_monitor_reference(set, m, ref.inputs(), ref.targets());
  const auto path = dir.file("v1.detect");
  set.save(path);
  return path;
}

// A registry whose model `m` version 1 (an mlp with its calibration) is in production, signed.
// `trained`: version 1 fitted for 2 epochs on 3,000 images (~80 %), not left at its initialisation,
// for tests whose traffic must look unlike the training data to the detectors.
struct LoopRegistry {
  TempDir dir;
  std::string reg = dir.file("reg"), key = dir.file("k.key");
  explicit LoopRegistry(bool trained = false) {
    registry::Registry::init(reg);
    registry::generate_key_pair(key, dir.file("k.pub"));
    registry::Registry r(reg, "test");
    r.trust_key(dir.file("k.pub"));
    const auto model = write_model(dir, "v1.pt", "mlp", 1);
    if (trained) {
      auto m = model::Model::load(model);
      train::CrossEntropyObjective ce;
      train::fit(m, data::load_dataset("fashion-mnist", data::Split::kTrain).head(3000), {},
                 train::TrainOptions().epochs(2).batch_size(64).progress(false), ce);
      m.set_training(false);
      m.save(model);
    }
    registry::RegisterRequest req;
    req.model = "m";
    req.files = {{"model.pt", model}, {"model.detect", calibrate(dir, model)}};
    const auto k = registry::SigningKey::load(key);
    r.register_version(req, &k);
    r.set_operator_key(std::make_shared<const registry::SigningKey>(registry::SigningKey::load(key)));
    r.promote("m", 1, registry::Stage::kProduction);
    std::filesystem::copy_file(reg + "/log.pub", log_pub);  // the server's --log-key, kept outside
  }
  std::string log_pub = dir.file("log-kept-outside.pub");
  std::string trusted() const { return dir.file("k.pub"); }
  int64_t production() const {
    registry::Registry r(reg, "test");
    return r.resolve(registry::parse_reference("m@production")).version;
  }
  std::vector<registry::AuditEntry> audit() const {
    registry::Registry r(reg, "test");
    return r.audit().entries();
  }
  bool audit_ok() const {
    registry::Registry r(reg, "test");
    return r.audit().verify().ok;
  }
};

// The error a guard.yaml `policy:` section is refused with, or "accepted".
inline std::string policy_error(const std::string& yaml) {
  try {
    control::Policy::from_yaml(YAML::Load(yaml), "guard.yaml: policy");
  } catch (const Error& e) {
    return std::string(e.what());
  }
  return std::string("accepted");
}

inline control::Policy small_policy(const std::string& key) {
  control::Policy p;
  p.hardening.method = "fast-at";
  p.hardening.epochs = 1;
  p.hardening.limit = 1200;
  p.hardening.budget_minutes = 5;
  p.hardening.key = key;
  p.hardening.detectors = {"max-softmax"};
  p.gate.n = 50;
  p.gate.pgd_steps = 5;
  // The one-epoch Fast-AT MLPs these tests make are often beaten by Square more than by APGD-CE (the
  // gate's masking check refuses them: TheGateRefusesACandidateThatMasksGradients); the tests that
  // use this policy are about the loop around the gate.
  p.gate.attacks = {"pgd"};
  p.watch.window_s = 2;
  p.watch.min_feedback = 10;
  p.cooldown_s = 3600;
  return p;
}

// The server core following m@production, a REST frontend, and the controller. Tokens: two
// labellers (infer + feedback: the watch's rollback needs labels from two), two plain clients,
// and an operator (admin).
constexpr const char* kLabelerToken = "labeler-secret";
constexpr const char* kLabeler2Token = "labeler2-secret";
constexpr const char* kClientAToken = "client-a-secret";
constexpr const char* kClientBToken = "client-b-secret";
constexpr const char* kOpsToken = "ops-secret";

struct Loop {
  serve::InferenceCore core;
  std::unique_ptr<serve::HttpFrontend> http;
  std::unique_ptr<control::Controller> controller;
  control::ControllerOptions controller_options;
  // `reference`: what the server serves; a pinned version (registry:m@1) is not followed, so a
  // promotion waits for the swap until the test loads the stage.
  Loop(const LoopRegistry& r, const control::Policy& policy, const std::string& reference = "registry:m@production")
      : core(options(r)) {
    using serve::Role;
    core.set_tokens(serve::TokenStore::from_entries(
        {{"labeler", serve::sha256_hex(kLabelerToken), {Role::kInfer, Role::kFeedback}},
         {"labeler2", serve::sha256_hex(kLabeler2Token), {Role::kInfer, Role::kFeedback}},
         {"client-a", serve::sha256_hex(kClientAToken), {Role::kInfer}},
         {"client-b", serve::sha256_hex(kClientBToken), {Role::kInfer}},
         {"ops", serve::sha256_hex(kOpsToken), {Role::kInfer, Role::kAdmin}}}));
    core.load_model("fashion", reference);
    serve::HttpOptions h;
    h.port = 0;
    http = std::make_unique<serve::HttpFrontend>(core, h);
    http->start();
    control::ControllerOptions o;
    o.registry_dir = r.reg;
    o.trust_keys = r.trusted();
    o.log_key = r.log_pub;
    o.model = "m";
    o.served_name = "fashion";
    o.tick_s = 0.05;
    // A bound on failure only: the swap recalibrates the candidate's stream monitor, which for the
    // near-constant models these tests train takes over 30 s under the sanitizers (make test SAN=1),
    // and over 240 s there on a loaded machine.
    o.promote_deadline_s = 240 * kSanitizerSlowdown;
    controller_options = o;
    controller = std::make_unique<control::Controller>(o, policy, core);
    // The /v2/guard routes, as `bulwark guard` wires them.
    core.set_control({[this] { return controller->status(); },
                      [this](const std::string& actor) { return controller->request_hardening(actor); },
                      [this](const std::string& actor, const std::string& decision) {
                        return controller->decide(actor, decision);
                      }});
    controller->start();
  }
  ~Loop() {
    controller->stop();
    http->stop();
  }
  // A new controller on the same state file (a restarted guard), with `policy`.
  void restart(const control::Policy& policy) {
    controller->stop();
    controller = std::make_unique<control::Controller>(controller_options, policy, core);
    controller->start();
  }
  static serve::CoreOptions options(const LoopRegistry& r) {
    serve::CoreOptions o;
    o.source.registry = r.reg;
    o.source.trust_keys = r.trusted();
    o.source.log_key = r.log_pub;
    o.source.follow_interval_ms = 100;
    o.access_log = "off";
    return o;
  }
  bool wait_for(control::State s, double seconds) {
    const auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
    while (std::chrono::steady_clock::now() < until) {
      const auto now = controller->state();
      // The state is visible before the transition's audit entry and event are written: wait for
      // the event too, so callers can read both.
      if (now == s && last_transition_to() == control::to_string(s)) return true;
      if (now == control::State::kFailed && s != now) return false;  // no use waiting: the status says why
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return false;
  }
  // Sends `n` test images and labels each answer by the feedback id the server issued: the model's
  // own prediction (agree) or another class. The labellers take turns unless `one_labeller`.
  // Returns the model versions the answers and the feedback receipts named.
  std::set<std::string> labelled_traffic(int n, bool agree, int offset, bool one_labeller = false) {
    std::set<std::string> versions;
    httplib::Client a("127.0.0.1", http->port()), b("127.0.0.1", http->port());
    a.set_bearer_token_auth(kLabelerToken);
    b.set_bearer_token_auth(kLabeler2Token);
    static const auto test = data::load_dataset("fashion-mnist", data::Split::kTest);
    for (int i = 0; i < n; ++i) {
      auto& c = one_labeller || i % 2 == 0 ? a : b;
      const auto x = test.inputs(torch::tensor({offset + i})).contiguous();
      const std::vector<float> pixels(x.data_ptr<float>(), x.data_ptr<float>() + x.numel());
      const json body{{"inputs", {{{"name", "input"}, {"shape", {1, 1, 28, 28}}, {"datatype", "FP32"}, {"data", pixels}}}}};
      const auto r = c.Post("/v2/models/fashion/infer", body.dump(), "application/json");
      EXPECT_TRUE(r && r->status == 200) << (r ? r->body : "no answer");
      if (!r || r->status != 200) break;
      const auto answer = json::parse(r->body);
      versions.insert(answer["model_version"].get<std::string>());
      const auto logits = answer["outputs"][0]["data"].get<std::vector<float>>();
      const int pred = static_cast<int>(std::max_element(logits.begin(), logits.end()) - logits.begin());
      const json fb{{"id", answer["parameters"]["feedback_id"]}, {"labels", {std::to_string(agree ? pred : (pred + 1) % 10)}}};
      const auto f = c.Post("/v2/models/fashion/feedback", fb.dump(), "application/json");
      EXPECT_TRUE(f && f->status == 200) << (f ? f->body : "no answer");
      if (!f || f->status != 200) break;
      versions.insert(json::parse(f->body)["model_version"].get<std::string>());
    }
    a.stop();
    b.stop();
    return versions;
  }
  // Uniform-noise images from `token`, as fast as answered, until `stop` (or `n` requests): far
  // from a trained model's data (LoopRegistry(true)), so detector hits and an alarm within seconds.
  // Returns the statuses seen.
  std::map<int, int> noise_traffic(const std::string& token, const std::atomic<bool>& stop, int n = 1 << 30) {
    httplib::Client c("127.0.0.1", http->port());
    c.set_bearer_token_auth(token);
    std::map<int, int> statuses;
    for (int i = 0; i < n && !stop; ++i) {
      const auto x = torch::rand({1, 1, 28, 28});
      const std::vector<float> pixels(x.data_ptr<float>(), x.data_ptr<float>() + x.numel());
      const json body{{"inputs", {{{"name", "input"}, {"shape", {1, 1, 28, 28}}, {"datatype", "FP32"}, {"data", pixels}}}}};
      const auto r = c.Post("/v2/models/fashion/infer", body.dump(), "application/json");
      ++statuses[r ? r->status : 0];
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    c.stop();
    return statuses;
  }
  // The reasons of the transitions into `state`, oldest first, from the audit log.
  static std::vector<std::string> transitions_to(const LoopRegistry& r, const std::string& state) {
    std::vector<std::string> out;
    for (const auto& e : r.audit()) {
      if (e.action != "guard.transition") continue;
      const auto d = json::parse(e.details);
      if (d["to"] == state) out.push_back(d["reason"]);
    }
    return out;
  }
  std::string last_transition_to() {
    const auto events = core.guard().events().recent(256);
    for (auto it = events.rbegin(); it != events.rend(); ++it) {
      if (it->kind == "guard.state") return it->details.value("to", "");
    }
    return "";
  }
  std::vector<detect::Event> guard_events() {
    std::vector<detect::Event> out;
    for (const auto& e : core.guard().events().recent(256)) {
      if (e.kind.rfind("guard.", 0) == 0) out.push_back(e);
    }
    return out;
  }
};

}  // namespace bulwark::testing
