// bench/detect — the watch, measured end to end against a real server on loopback.
//   build/bench/detect stateful MODEL.pt [IMAGES=50] [QUERIES=5000]
//     Bulwark's Square attacks IMAGES test images through the live V2 REST endpoint (a remote
//     LogitsFn), one client (token) per image, with the query-similarity detector on (policy flag).
//     Per image: the query at which the server flagged the client / the queries Square needed to
//     succeed (the budget when it did not). Then all 10,000 test images replayed as benign traffic
//     from 20 clients with policy block: flagged queries and blocked clients.
//   build/bench/detect monitor MODEL.pt CALIBRATION [RATE_HZ=50]
//     Benign test images at RATE_HZ, then FGSM (eps 0.1, crafted white-box on a local copy of the
//     model: a transfer attacker with the same weights) at 100 % and at 20 % of the traffic: time
//     from the switch to the monitor's alarm. Then >= 10 hours of clean traffic replayed through
//     the monitor API in simulated time: false alarms per hour.
#include <httplib.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <mutex>
#include <random>
#include <thread>

#include <torch/torch.h>

#include "attack/attack.h"
#include "core/digest.h"
#include "data/dataset.h"
#include "detect/calibration.h"
#include "detect/monitor.h"
#include "model/model.h"
#include "serve/core.h"
#include "serve/http_frontend.h"

namespace {

using Clock = std::chrono::steady_clock;
using nlohmann::json;
namespace serve = bulwark::serve;
namespace detect = bulwark::detect;

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

std::string token_of(const std::string& id) { return "bench-token-" + id; }

std::shared_ptr<serve::TokenStore> tokens(const std::vector<std::string>& ids) {
  std::vector<serve::TokenEntry> e;
  for (const auto& id : ids) e.push_back({id, serve::sha256_hex(token_of(id)), {serve::Role::kInfer}, 0, 0});
  return serve::TokenStore::from_entries(e);
}

json infer_body(const torch::Tensor& x) {
  const auto c = x.contiguous();
  return {{"inputs",
           {{{"name", "input"},
             {"shape", c.sizes().vec()},
             {"datatype", "FP32"},
             {"data", std::vector<float>(c.data_ptr<float>(), c.data_ptr<float>() + c.numel())}}}}};
}

// The live endpoint as an attack::LogitsFn: every call is one V2 request carrying its rows.
struct Remote {
  httplib::Client client;
  std::string auth;
  std::atomic<int64_t> rows{0};
  int64_t refused = 0;
  Remote(int port, const std::string& token) : client("127.0.0.1", port), auth("Bearer " + token) {
    client.set_keep_alive(true);
    client.set_tcp_nodelay(true);
    client.set_read_timeout(60, 0);
  }
  torch::Tensor logits(const torch::Tensor& x) {
    rows += x.size(0);
    const auto r = client.Post("/v2/models/m/infer", {{"Authorization", auth}}, infer_body(x).dump(), "application/json");
    if (!r || r->status != 200) {
      ++refused;
      throw std::runtime_error("request refused: " + (r ? r->body : std::string("no response")));
    }
    const auto j = json::parse(r->body);
    const auto v = j["outputs"][0]["data"].get<std::vector<float>>();
    return torch::tensor(v).view({x.size(0), -1});
  }
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
}

int run_stateful(const std::string& model_path, int images, int64_t queries) {
  std::vector<std::string> ids;
  for (int i = 0; i < images; ++i) ids.push_back("attacker-" + std::to_string(i));
  for (int i = 0; i < 20; ++i) ids.push_back("benign-" + std::to_string(i));
  const auto test = bulwark::data::load_dataset("fashion-mnist", bulwark::data::Split::kTest);
  const auto local = bulwark::model::Model::load(model_path);

  auto make_server = [&](const std::string& policy) {
    serve::CoreOptions o;
    o.access_log = "off";
    o.source.allow_unsigned = true;  // unsigned files made for the run
    o.guard.scorer = "none";
    o.guard.stateful = policy;
    o.batching.max_queue_delay_us = 100;
    auto core = std::make_unique<serve::InferenceCore>(o);
    core->set_tokens(tokens(ids));
    core->load_model("m", model_path);
    return core;
  };

  // 1. Square against the live server, policy flag: the attack runs to the end, flags are counted.
  auto core = make_server("flag");
  serve::HttpOptions h;
  h.port = 0;
  h.threads = 96;  // a keep-alive connection holds a server thread: one per attacked image's client
  serve::HttpFrontend http(*core, h);
  http.start();
  std::mutex mu;
  std::map<std::string, int64_t> flagged_at;  // client -> rows it had sent when flagged
  std::map<std::string, Remote*> remotes;
  core->guard().events().subscribe([&](const detect::Event& e) {
    if (e.kind != "client.flagged") return;
    std::lock_guard<std::mutex> lock(mu);
    const auto it = remotes.find(e.subject);
    if (it != remotes.end() && !flagged_at.count(e.subject)) flagged_at[e.subject] = it->second->rows;
  });
  std::vector<double> ratios, needed_all, flag_all;
  int succeeded = 0, attacked = 0, never_flagged = 0;
  const auto t0 = Clock::now();
  for (int i = 0, idx = 0; attacked < images && idx < test.size(); ++idx) {
    const auto x = test.inputs(torch::tensor({static_cast<int64_t>(idx)}));
    const auto y = test.targets(torch::tensor({static_cast<int64_t>(idx)}));
    {
      torch::NoGradGuard ng;
      if (local.logits(x).argmax(1).item<int64_t>() != y.item<int64_t>()) continue;  // attack correct points only
    }
    const std::string id = ids[i++];
    Remote remote(http.port(), token_of(id));
    {
      std::lock_guard<std::mutex> lock(mu);
      remotes["token:" + id] = &remote;
    }
    auto square = bulwark::attack::make_attack("square", 0.1, [&] {
      bulwark::attack::AttackSettings s;
      s.square_queries = queries;
      s.seed = static_cast<uint64_t>(idx);
      return s;
    }());
    const auto adv = square->perturb([&](const torch::Tensor& v) { return remote.logits(v); }, x, y);
    remote.client.stop();
    bool fooled;
    {
      torch::NoGradGuard ng;
      fooled = local.logits(adv).argmax(1).item<int64_t>() != y.item<int64_t>();
    }
    const double needed = fooled ? square->queries()[0].item<double>() : static_cast<double>(queries);
    std::lock_guard<std::mutex> lock(mu);
    const auto f = flagged_at.find("token:" + id);
    const double at = f == flagged_at.end() ? static_cast<double>(remote.rows) : static_cast<double>(f->second);
    if (f == flagged_at.end()) ++never_flagged;
    remotes.erase("token:" + id);
    succeeded += fooled;
    ++attacked;
    needed_all.push_back(needed);
    flag_all.push_back(at);
    ratios.push_back(at / needed);
    std::fprintf(stderr, "\rimage %d/%d: needed %.0f, flagged at %.0f   ", attacked, images, needed, at);
  }
  std::fprintf(stderr, "\n");
  std::printf("Square (L-inf eps 0.1, budget %lld) through the live V2 REST endpoint, one client per image, %.0f s:\n",
              static_cast<long long>(queries), seconds_since(t0));
  std::printf("  images attacked %d, Square succeeded on %d; never flagged %d\n", attacked, succeeded, never_flagged);
  std::printf("  queries Square needed: median %.0f; query at which the client was flagged: median %.0f\n",
              median(needed_all), median(flag_all));
  std::sort(ratios.begin(), ratios.end());
  std::printf("  flagged-at / needed: median %.2f%% (goal <= 1%%), p90 %.2f%%, max %.2f%%\n", 100 * median(ratios),
              100 * ratios[static_cast<size_t>(0.9 * (ratios.size() - 1))], 100 * ratios.back());
  http.stop();

  // 2. Benign: every test image once, 20 clients in turn, policy block.
  auto benign = make_server("block");
  serve::HttpFrontend http2(*benign, h);
  http2.start();
  std::vector<std::unique_ptr<Remote>> clients;
  for (int c = 0; c < 20; ++c) clients.push_back(std::make_unique<Remote>(http2.port(), token_of("benign-" + std::to_string(c))));
  int64_t refused = 0;
  const auto t1 = Clock::now();
  for (int64_t k = 0; k < test.size(); ++k) {
    auto& c = *clients[static_cast<size_t>(k % 20)];
    try {
      c.logits(test.inputs(torch::tensor({k})));
    } catch (const std::exception&) {
      ++refused;
    }
  }
  const auto st = benign->guard().options().stateful;
  const auto metrics = benign->render_metrics();
  auto metric = [&](const std::string& name) {
    const auto p = metrics.find("\n" + name);
    if (p == std::string::npos) return 0.0;
    return std::atof(metrics.c_str() + metrics.find(' ', p + 1) + 1);
  };
  const double hits = metric("bulwark_stateful_hits_total{model=\"m\"}");
  const double flagged = metric("bulwark_stateful_flagged_total{policy=\"block\"}");
  std::printf("benign replay: %lld test images from 20 clients in %.0f s (policy %s): %.0f hits (%.3f%% of queries, "
              "goal < 0.1%% flagged), %.0f clients flagged, %lld requests refused\n",
              static_cast<long long>(test.size()), seconds_since(t1), st.c_str(), hits, 100 * hits / test.size(), flagged,
              static_cast<long long>(refused));
  std::printf("memory: %s\n", benign->guard().status(0)["stateful"].dump().c_str());
  http2.stop();
  return 0;
}

// Per-input observations (confidence, flag, class) of a set of inputs through the detectors.
struct Observed {
  std::vector<float> conf;
  std::vector<bool> hit;
  std::vector<int64_t> cls;
};

Observed observe_all(const detect::DetectorSet& set, const bulwark::model::Model& m, const torch::Tensor& x) {
  torch::NoGradGuard ng;
  Observed o;
  for (int64_t s = 0; s < x.size(0); s += 500) {
    const auto xc = x.narrow(0, s, std::min<int64_t>(500, x.size(0) - s));
    detect::Batch b;
    b.x = xc;
    std::tie(b.logits, b.features) = m.logits_and_features(xc);
    const auto f = set.score(m, b).flagged;
    const auto top = torch::softmax(b.logits, 1).max(1);
    for (int64_t i = 0; i < xc.size(0); ++i) {
      o.conf.push_back(std::get<0>(top)[i].item<float>());
      o.cls.push_back(std::get<1>(top)[i].item<int64_t>());
      o.hit.push_back(f[i].item<bool>());
    }
  }
  return o;
}

int run_monitor(const std::string& model_path, const std::string& calibration, double rate_hz) {
  const auto test = bulwark::data::load_dataset("fashion-mnist", bulwark::data::Split::kTest);
  auto local = bulwark::model::Model::load(model_path);
  local.set_training(false);
  // FGSM traffic, crafted white-box on the local copy.
  const int64_t n_adv = 2000;
  torch::Tensor adv;
  {
    bulwark::model::FrozenParameters frozen(local);
    bulwark::attack::AttackSettings s;
    auto fgsm = bulwark::attack::make_attack("fgsm", 0.1, s);
    adv = fgsm->perturb(bulwark::attack::logits_of(local), test.inputs(torch::arange(n_adv)),
                        test.targets(torch::arange(n_adv)));
  }
  serve::CoreOptions o;
  o.access_log = "off";
  o.source.allow_unsigned = true;  // unsigned files made for the run
  o.guard.calibration = {{"m", calibration}};
  o.guard.monitor_options.expected_rate_hz(rate_hz);
  std::printf("monitor: %s, ARL0 %.0f h at %.0f req/s; traffic over V2 REST, one image per request\n", calibration.c_str(),
              o.guard.monitor_options.arl0_hours(), rate_hz);
  for (const double share : {1.0, 0.2}) {
    serve::InferenceCore core(o);
    core.load_model("m", model_path);
    serve::HttpOptions h;
    h.port = 0;
    h.threads = 4;
    serve::HttpFrontend http(core, h);
    http.start();
    std::atomic<double> alarm_at{-1};
    std::string alarm_detector;
    core.guard().events().subscribe([&](const detect::Event& e) {
      if (e.kind == "alarm" && alarm_at < 0) {
        alarm_detector = e.detector;
        alarm_at = e.time_s;
      }
    });
    httplib::Client c("127.0.0.1", http.port());
    c.set_keep_alive(true);
    c.set_tcp_nodelay(true);
    std::mt19937_64 rng(7);
    const double benign_s = 20, attack_s = 10;
    const auto start = Clock::now();
    double switch_unix = 0;
    int64_t sent = 0, correct = 0, attacked_sent = 0, failed = 0, false_alarm = 0;
    for (int64_t k = 0;; ++k) {
      const double t = k / rate_hz;
      if (t > benign_s + attack_s) break;
      std::this_thread::sleep_until(start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(t)));
      const bool attacking = t >= benign_s;
      if (attacking && switch_unix == 0) {
        switch_unix = serve::unix_now_s();
        false_alarm = alarm_at >= 0;
      }
      const bool adversarial = attacking && std::uniform_real_distribution<double>(0, 1)(rng) < share;
      const int64_t i = adversarial ? static_cast<int64_t>(rng() % n_adv) : n_adv + static_cast<int64_t>(rng() % (test.size() - n_adv));
      const auto x = adversarial ? adv.narrow(0, i, 1) : test.inputs(torch::tensor({i}));
      const auto r = c.Post("/v2/models/m/infer", infer_body(x).dump(), "application/json");
      if (!r || r->status != 200) {
        ++failed;
        continue;
      }
      ++sent;
      attacked_sent += adversarial;
      const auto j = json::parse(r->body);
      const auto z = torch::tensor(j["outputs"][0]["data"].get<std::vector<float>>());
      correct += z.argmax().item<int64_t>() == test.targets(torch::tensor({i % test.size()})).item<int64_t>();
      if (attacking && alarm_at >= 0 && t > benign_s + 2) break;  // measured; stop early
    }
    http.stop();
    const double delay = alarm_at >= 0 ? alarm_at - switch_unix : -1;
    std::printf("  FGSM share %3.0f%%: %s%s; alarm %s after the switch (detector %s); %lld requests, %lld failed\n",
                100 * share, false_alarm ? "FALSE ALARM during benign phase; " : "no alarm in the 20 s benign phase",
                "", delay >= 0 ? (std::to_string(delay).substr(0, 5) + " s").c_str() : "never",
                alarm_detector.empty() ? "-" : alarm_detector.c_str(), static_cast<long long>(sent),
                static_cast<long long>(failed));
  }

  // False alarms on clean traffic, in simulated time: the monitor the server builds, fed clean
  // test images (which the calibration never saw) drawn at random, at rate_hz, for 10 hours.
  const auto set = detect::DetectorSet::load(calibration, local, bulwark::sha256_file_hex(model_path));
  const auto ref = detect::MonitorReference::from_json(set.monitor_reference());
  const auto calibration_start = std::chrono::steady_clock::now();
  const auto th = detect::calibrate_thresholds(ref, o.guard.monitor_options, 0);
  std::printf("monitor thresholds calibrated in %.3f s (the server does this at load and on each swap)\n",
              std::chrono::duration<double>(std::chrono::steady_clock::now() - calibration_start).count());
  const auto obs = observe_all(set, local, test.inputs());
  const double hours = 10;
  int64_t alarms = 0;
  std::map<std::string, int64_t> by;
  detect::EventBus bus;
  bus.subscribe([&](const detect::Event& e) {
    if (e.kind == "alarm") ++alarms, ++by[e.detector];
  });
  detect::StreamMonitor mon(o.guard.monitor_options, ref, th, &bus, "m", "1");
  std::mt19937_64 rng(11);
  const auto t0 = Clock::now();
  const int64_t total = static_cast<int64_t>(hours * 3600 * rate_hz);
  for (int64_t k = 0; k < total; ++k) {
    const auto i = static_cast<size_t>(rng() % obs.conf.size());
    mon.observe(k / rate_hz, obs.conf[i], obs.hit[i], obs.cls[i]);
  }
  std::printf("clean replay: %.0f simulated hours (%lld observations of the 10,000 test images, %.1f s): %lld false alarms "
              "= %.2f per hour (goal <= 1; ARL0 %.0f h)",
              hours, static_cast<long long>(total), seconds_since(t0), static_cast<long long>(alarms), alarms / hours,
              o.guard.monitor_options.arl0_hours());
  for (const auto& [d, n] : by) std::printf(", %s %lld", d.c_str(), static_cast<long long>(n));
  double hit_rate = 0;
  for (bool h : obs.hit) hit_rate += h;
  std::printf("\n  clean test-set flag rate %.2f%% (calibrated FPR %.2f%%)\n", 100 * hit_rate / obs.hit.size(), 100 * set.fpr());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "";
  torch::set_num_threads(static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
  try {
    if (mode == "stateful" && argc >= 3) {
      return run_stateful(argv[2], argc > 3 ? std::atoi(argv[3]) : 50, argc > 4 ? std::atoll(argv[4]) : 5000);
    }
    if (mode == "monitor" && argc >= 4) return run_monitor(argv[2], argv[3], argc > 4 ? std::atof(argv[4]) : 50);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  std::fprintf(stderr, "usage: detect stateful MODEL.pt [IMAGES] [QUERIES] | detect monitor MODEL.pt CALIBRATION [RATE_HZ]\n");
  return 2;
}
