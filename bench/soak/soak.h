// bench/soak/soak.h — what every part of the soak shares: the server's settings (the checks
// depend on them), the per-client tally of answers, and the state of one run (Soak). main.cpp
// says what the soak does and how to run it.
#pragma once

#include <grpcpp/grpcpp.h>
#include <httplib.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "grpc_predict_v2.grpc.pb.h"
#include "server.h"
#include "workspace.h"

namespace bulwark::soak {

using Clock = std::chrono::steady_clock;
using nlohmann::json;
namespace fs = std::filesystem;

// The server's settings; the checks depend on them.
constexpr int kThreads = 96;  // above --max-queue, and the ~25 connections the soak holds
constexpr int kMaxBatch = 32;
constexpr int kMaxQueue = 64;  // 16 valid clients of 1..4 rows fill it; one more row gets 503
constexpr int kRequestTimeoutMs = 5000;
constexpr int kDrainTimeoutMs = 5000;
// docs/security.md: a client trickling bytes holds a request thread for up to 30 s per request,
// and stopping the REST frontend waits for those threads.
constexpr int kHttpReadBoundS = 30;
constexpr int kMaxBodyBytes = 1 << 20;
constexpr double kLimitedRatePerS = 20;  // the rate-limited token; its client tries about twice that
constexpr int kSwapEveryS = 5;
constexpr int kRssEveryS = 5;    // sampled often: a swap holds two models for a moment
constexpr int kRssWindowS = 60;  // start and end RSS: medians over the first and the last minute (a
                                 // quarter of the run each when shorter)
constexpr int kProgressEveryS = 30;
constexpr int kValues = 784;    // 1x28x28
constexpr float kTrip = 0.99f;  // the flaky model fails when x[0,0,0,0] (raise) or x[0,0,0,1] (LibTorch) is above

double since_s(Clock::time_point t0);
bool contains(const std::string& s, const std::string& part);
void replace_all(std::string& s, const std::string& from, const std::string& to);

// --- what happened: per (kind, result) counts, one tally per client thread, merged at the end ---

enum class Verdict { kExpected, kRefused, kFailed };  // kRefused: 429/503 where the docs promise them

struct Count {
  uint64_t n = 0;
  Verdict verdict = Verdict::kExpected;
  std::string sample;  // the first answer's detail, for the report
};

// Written by one client thread only; read after that thread has joined.
struct Tally {
  std::map<std::pair<std::string, std::string>, Count> counts;  // (kind, result)
  std::vector<float> latency_ms;                                // answered valid requests (200 / OK)
};

// Read by the progress line while clients run.
struct Live {
  std::atomic<uint64_t> requests{0}, failed{0};
};

// --- the shared state of a run: every client thread holds it; what they change is atomic ---

struct Soak {
  Workspace ws;
  ServerProcess* server = nullptr;
  int http_port = 0, grpc_port = 0;
  uint64_t seed = 1;
  Live live;
  std::atomic<bool> stop_load{false}, stop_slow{false};
  // Steady-clock ns: when SIGTERM went, and when the server last ended a slow connection after it.
  std::atomic<int64_t> sigterm_ns{0}, slow_closed_after_sigterm_ns{0};
  std::atomic<int> swaps{0};

  void record(Tally& t, const std::string& kind, const std::string& result, Verdict v, const std::string& detail = "");
  httplib::Client http(const std::string& token) const;
  std::unique_ptr<inference::GRPCInferenceService::Stub> grpc() const;
};

}  // namespace bulwark::soak
