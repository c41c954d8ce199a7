// bench/serve — the server under load on loopback, against the bare model in the same run.
//   build/bench/serve [MODEL.pt|-] [SECONDS_PER_POINT] [CALIBRATION]
// Figures: batch-1 latency p50/p99 and throughput at concurrency 1, 8, 32 over REST (JSON) and gRPC
// (raw tensors); overhead vs the bare forward; dynamic-batching throughput vs the model's offline
// batched throughput (goal >= 70 %); guard on vs off, in alternating rounds (goal <= 10 %). With a
// CALIBRATION (bulwark detect calibrate): each detector's own cost per batch, and the calibrated
// default set on vs detection off, paired rounds: p50 at concurrency 1 (goal <= 1.10x) and
// throughput at concurrency 32 (goal >= 0.90x).
// The load generator is in this file: one keep-alive client per thread, each sending its next
// request as soon as its last one returns (closed loop). Clients share the 2 cores with the server.
#include <grpcpp/grpcpp.h>
#include <httplib.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <functional>
#include <thread>

#include <torch/torch.h>

#include "grpc_predict_v2.grpc.pb.h"
#include "core/digest.h"
#include "detect/calibration.h"
#include "model/zoo.h"
#include "serve/core.h"
#include "serve/grpc_frontend.h"
#include "serve/http_frontend.h"

namespace {

using Clock = std::chrono::steady_clock;
using bulwark::serve::InferenceCore;

double seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

struct Load {
  double p50_ms = 0, p99_ms = 0, per_s = 0;
  int errors = 0;
};

double percentile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(q * static_cast<double>(v.size())))];
}

// Runs `threads` closed-loop clients for `secs`; send() does one request and returns success.
template <typename MakeClient>
Load run_load(int threads, double secs, MakeClient make_client) {
  std::vector<std::vector<double>> lat(threads);
  std::atomic<int> errors{0};
  std::atomic<bool> go{false}, stop{false};
  std::vector<std::thread> ts;
  for (int t = 0; t < threads; ++t) {
    ts.emplace_back([&, t] {
      auto send = make_client();
      for (int i = 0; i < 3; ++i) send();  // connect and warm up
      while (!go) std::this_thread::yield();
      while (!stop) {
        const auto t0 = Clock::now();
        if (!send()) ++errors;
        lat[t].push_back(seconds(Clock::now() - t0) * 1e3);
      }
    });
  }
  go = true;
  const auto start = Clock::now();
  std::this_thread::sleep_for(std::chrono::duration<double>(secs));
  stop = true;
  for (auto& t : ts) t.join();
  const double elapsed = seconds(Clock::now() - start);
  std::vector<double> all;
  for (auto& l : lat) all.insert(all.end(), l.begin(), l.end());
  return {percentile(all, 0.5), percentile(all, 0.99), static_cast<double>(all.size()) / elapsed, errors.load()};
}

std::vector<float> image() {
  std::vector<float> v(784);
  for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<float>((i * 37) % 256) / 255.0f;
  return v;
}

auto rest_client(int port) {
  return [port] {
    auto c = std::make_shared<httplib::Client>("127.0.0.1", port);
    c->set_keep_alive(true);
    c->set_tcp_nodelay(true);
    nlohmann::json body{{"inputs", {{{"name", "input"}, {"shape", {1, 1, 28, 28}}, {"datatype", "FP32"}, {"data", image()}}}}};
    auto text = std::make_shared<std::string>(body.dump());
    return [c, text] {
      const auto r = c->Post("/v2/models/m/infer", *text, "application/json");
      return r && r->status == 200;
    };
  };
}

auto grpc_client(int port) {
  return [port] {
    auto stub = std::shared_ptr<inference::GRPCInferenceService::Stub>(inference::GRPCInferenceService::NewStub(
        grpc::CreateChannel("127.0.0.1:" + std::to_string(port), grpc::InsecureChannelCredentials())));
    auto q = std::make_shared<inference::ModelInferRequest>();
    q->set_model_name("m");
    auto* in = q->add_inputs();
    in->set_name("input");
    in->set_datatype("FP32");
    for (int d : {1, 1, 28, 28}) in->add_shape(d);
    const auto img = image();
    q->add_raw_input_contents(std::string(reinterpret_cast<const char*>(img.data()), img.size() * 4));
    return [stub, q] {
      grpc::ClientContext ctx;
      inference::ModelInferResponse r;
      return stub->ModelInfer(&ctx, *q, &r).ok();
    };
  };
}

struct Server {
  Server(const std::string& model, const std::string& guard, int max_batch, const std::string& calibration = "") {
    bulwark::serve::CoreOptions o;
    o.guard.scorer = guard;
    if (!calibration.empty()) o.guard.calibration = {{"m", calibration}};
    o.access_log = "off";
    o.source.allow_unsigned = true;  // unsigned files made for the run
    o.batching.max_batch = max_batch;
    o.batching.max_queue_delay_us = 200;
    core = std::make_unique<InferenceCore>(o);
    core->load_model("m", model);
    bulwark::serve::HttpOptions h;
    h.port = 0;
    h.threads = 40;
    http = std::make_unique<bulwark::serve::HttpFrontend>(*core, h);
    http->start();
    bulwark::serve::GrpcOptions g;
    g.port = 0;
    g.threads = 40;
    grpc = std::make_unique<bulwark::serve::GrpcFrontend>(*core, g);
  }
  ~Server() {
    http->stop();
    grpc->stop();
  }
  std::unique_ptr<InferenceCore> core;
  std::unique_ptr<bulwark::serve::HttpFrontend> http;
  std::unique_ptr<bulwark::serve::GrpcFrontend> grpc;
};

// Each calibrated detector's own cost on the batch thread, then the whole default set in the server.
void detector_costs(const std::string& model, const std::string& calibration, double secs) {
  namespace detect = bulwark::detect;
  const auto m = bulwark::model::Model::load(model);
  const auto set = detect::DetectorSet::load(calibration, m, bulwark::sha256_file_hex(model));
  torch::NoGradGuard ng;
  auto time_us = [&](const std::function<void()>& fn) {
    for (int i = 0; i < 20; ++i) fn();
    std::vector<double> t;
    const auto t0 = Clock::now();
    while (seconds(Clock::now() - t0) < secs / 3) {
      const auto s = Clock::now();
      fn();
      t.push_back(seconds(Clock::now() - s) * 1e6);
    }
    return percentile(t, 0.5);
  };
  std::printf("\ndetector cost on the batch thread (median us; forward = logits and features in one pass):\n");
  std::printf("| detector | batch 1 | batch 32 |\n| --- | --- | --- |\n");
  const auto x1 = torch::rand({1, 1, 28, 28}), x32 = torch::rand({32, 1, 28, 28});
  auto batch = [&](const torch::Tensor& x) {
    detect::Batch b;
    b.x = x;
    std::tie(b.logits, b.features) = m.logits_and_features(x);
    return b;
  };
  const auto b1 = batch(x1), b32 = batch(x32);
  std::printf("| forward | %.1f | %.1f |\n", time_us([&] { batch(x1); }), time_us([&] { batch(x32); }));
  for (const auto& d : set.detectors()) {
    std::printf("| %s | %.1f | %.1f |\n", d->name().c_str(), time_us([&] { d->score(m, b1); }),
                time_us([&] { d->score(m, b32); }));
  }
  std::printf("| all + p-values (%s) | %.1f | %.1f |\n", calibration.c_str(), time_us([&] { set.score(m, b1); }),
              time_us([&] { set.score(m, b32); }));

  // The server with the calibration's detectors vs detection off, alternating paired rounds.
  std::vector<double> lat, thr;
  for (int round = 0; round < 5; ++round) {
    double p50[2], per_s[2];
    for (int on = 0; on < 2; ++on) {
      Server g(model, "none", 32, on ? calibration : "");
      p50[on] = run_load(1, secs / 2, grpc_client(g.grpc->port())).p50_ms;
      per_s[on] = run_load(32, secs / 2, grpc_client(g.grpc->port())).per_s;
    }
    lat.push_back(p50[1] / p50[0]);
    thr.push_back(per_s[1] / per_s[0]);
  }
  std::sort(lat.begin(), lat.end());
  std::sort(thr.begin(), thr.end());
  std::printf("detectors on/off (gRPC, median of 5 paired rounds): p50 latency at concurrency 1 %.3fx (goal <= 1.10; "
              "rounds %.3f..%.3f), throughput at concurrency 32 %.3fx (goal >= 0.90; rounds %.3f..%.3f)\n",
              lat[2], lat.front(), lat.back(), thr[2], thr.front(), thr.back());
}

}  // namespace

int main(int argc, char** argv) {
  std::string model = argc > 1 ? argv[1] : "-";
  const double secs = argc > 2 ? std::atof(argv[2]) : 3.0;
  std::string tmp;
  if (model == "-" || !std::ifstream(model)) {
    tmp = "/tmp/bulwark-bench-serve-cnn.pt";
    bulwark::model::create_model("cnn", bulwark::model::default_spec(10), 0).save(tmp);
    model = tmp;
  }
  torch::set_num_threads(static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));  // as `bulwark serve`
  std::printf("model %s, %d LibTorch threads, %.1f s per point\n", model.c_str(), at::get_num_threads(), secs);

  // The bare model: batch-1 latency and offline batched throughput (batch 32).
  const auto m = bulwark::model::Model::load(model);
  torch::NoGradGuard ng;
  const auto x1 = torch::rand({1, 1, 28, 28}), x32 = torch::rand({32, 1, 28, 28});
  for (int i = 0; i < 20; ++i) m.logits(x1), m.logits(x32);
  std::vector<double> bare;
  auto t0 = Clock::now();
  while (seconds(Clock::now() - t0) < secs) {
    const auto s = Clock::now();
    m.logits(x1);
    bare.push_back(seconds(Clock::now() - s) * 1e3);
  }
  int batches = 0;
  t0 = Clock::now();
  while (seconds(Clock::now() - t0) < secs) m.logits(x32), ++batches;
  const double offline = 32.0 * batches / seconds(Clock::now() - t0);
  const double bare_p50 = percentile(bare, 0.5);
  std::printf("bare forward: batch-1 p50 %.3f ms, p99 %.3f ms; offline batch-32 throughput %.0f img/s\n", bare_p50,
              percentile(bare, 0.99), offline);

  Server s(model, "max-softmax", 32);
  std::printf("\n| transport | concurrency | p50 ms | p99 ms | req/s | errors |\n| --- | --- | --- | --- | --- | --- |\n");
  double best = 0, rest_c1_p50 = 0, grpc_c1_p50 = 0;
  for (const std::string transport : {"REST", "gRPC"}) {
    for (int c : {1, 8, 32}) {
      const auto r = transport == "REST" ? run_load(c, secs, rest_client(s.http->port()))
                                         : run_load(c, secs, grpc_client(s.grpc->port()));
      std::printf("| %s | %d | %.2f | %.2f | %.0f | %d |\n", transport.c_str(), c, r.p50_ms, r.p99_ms, r.per_s, r.errors);
      best = std::max(best, r.per_s);
      if (c == 1) (transport == "REST" ? rest_c1_p50 : grpc_c1_p50) = r.p50_ms;
    }
  }
  std::printf("\noverhead vs bare forward at concurrency 1 (p50): REST +%.2f ms (%.1fx), gRPC +%.2f ms (%.1fx)\n",
              rest_c1_p50 - bare_p50, rest_c1_p50 / bare_p50, grpc_c1_p50 - bare_p50, grpc_c1_p50 / bare_p50);
  std::printf("dynamic batching: best served throughput %.0f img/s = %.0f%% of offline batched %.0f img/s (goal >= 70%%)\n",
              best, 100 * best / offline, offline);

  // Guard on vs off: the same server settings, gRPC at concurrency 1, alternating rounds.
  std::vector<double> ratios;
  for (int round = 0; round < 5; ++round) {
    double p50[2];
    for (int on = 0; on < 2; ++on) {
      Server g(model, on ? "max-softmax" : "none", 32);
      p50[on] = run_load(1, secs / 2, grpc_client(g.grpc->port())).p50_ms;
    }
    ratios.push_back(p50[1] / p50[0]);
  }
  std::sort(ratios.begin(), ratios.end());
  std::printf("guard on/off request latency (gRPC, concurrency 1, p50, median of 5 paired rounds): %.3f (goal <= 1.10; "
              "rounds %.3f..%.3f)\n",
              ratios[2], ratios.front(), ratios.back());
  if (argc > 3) detector_costs(model, argv[3], secs);
  if (!tmp.empty()) std::remove(tmp.c_str());
  return 0;
}
