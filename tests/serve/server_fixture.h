// A real Bulwark server (core + both frontends) on loopback ports picked by the OS, serving small
// zoo models written to a temp dir; tests talk to it with real HTTP and gRPC clients.
#pragma once

#include <gtest/gtest.h>
#include <httplib.h>

#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "model/zoo.h"
#include "serve/auth.h"
#include "serve/core.h"
#include "serve/grpc_frontend.h"
#include "serve/http_frontend.h"
#include "test_util.h"

namespace bulwark::testing {

// Writes a zoo model and returns its path.
inline std::string write_model(const TempDir& dir, const std::string& name, const std::string& arch, uint64_t seed) {
  auto spec = model::default_spec(10);
  const auto m = model::create_model(arch, spec, seed);
  const auto path = dir.file(name);
  m.save(path);
  return path;
}

// Tokens used by the fixture: one per role mix, one rate-limited.
constexpr const char* kInferToken = "infer-secret";
constexpr const char* kAdminToken = "admin-secret";
constexpr const char* kFeedbackToken = "feedback-secret";
constexpr const char* kSlowToken = "slow-secret";

inline std::shared_ptr<serve::TokenStore> fixture_tokens() {
  using serve::Role;
  return serve::TokenStore::from_entries({
      {"client", serve::sha256_hex(kInferToken), {Role::kInfer}, 0, 0},
      {"ops", serve::sha256_hex(kAdminToken), {Role::kInfer, Role::kAdmin}, 0, 0},
      {"labeler", serve::sha256_hex(kFeedbackToken), {Role::kFeedback}, 0, 0},
      {"slow", serve::sha256_hex(kSlowToken), {Role::kInfer}, 2.0, 2.0},
  });
}

struct TestServer {
  explicit TestServer(serve::CoreOptions core_options = {}, bool auth = true, int max_body = 1 << 20) {
    model_a = write_model(dir, "a.pt", "mlp", 1);
    model_b = write_model(dir, "b.pt", "mlp", 2);
    core_options.access_log = dir.file("access.jsonl");
    // These tests serve unsigned files made on the fly; the registry's signed path has its own tests.
    core_options.source.allow_unsigned = true;
    if (core_options.source.model_root.empty()) core_options.source.model_root = dir.path();
    core = std::make_unique<serve::InferenceCore>(core_options);
    if (auth) core->set_tokens(fixture_tokens());
    core->load_model("fashion", model_a);
    serve::HttpOptions h;
    h.port = 0;
    h.threads = 48;
    h.max_body_bytes = static_cast<size_t>(max_body);
    http = std::make_unique<serve::HttpFrontend>(*core, h);
    http->start();
    serve::GrpcOptions g;
    g.port = 0;
    g.threads = 16;
    grpc = std::make_unique<serve::GrpcFrontend>(*core, g);
  }
  ~TestServer() {
    http->stop();
    grpc->stop();
  }

  httplib::Client client(const std::string& token = kInferToken) const {
    httplib::Client c("127.0.0.1", http->port());
    c.set_read_timeout(30, 0);
    if (!token.empty()) c.set_default_headers({{"Authorization", std::string("Bearer ") + token}});
    return c;
  }
  std::string grpc_address() const { return "127.0.0.1:" + std::to_string(grpc->port()); }

  TempDir dir;
  std::string model_a, model_b;
  std::unique_ptr<serve::InferenceCore> core;
  std::unique_ptr<serve::HttpFrontend> http;
  std::unique_ptr<serve::GrpcFrontend> grpc;
};

// A V2 JSON request for n images of 1x28x28 filled with `value`.
inline nlohmann::json infer_body(int n = 1, float value = 0.5f, const std::string& datatype = "FP32") {
  return {{"id", "req-1"},
          {"inputs",
           {{{"name", "input"},
             {"shape", {n, 1, 28, 28}},
             {"datatype", datatype},
             {"data", std::vector<float>(static_cast<size_t>(n) * 784, value)}}}}};
}

}  // namespace bulwark::testing
