// The V2 REST frontend against a real server on loopback, with cpp-httplib's client.
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <fstream>
#include <thread>

#include <torch/torch.h>

#include "server_fixture.h"

namespace bulwark::testing {
namespace {

using nlohmann::json;

json body_json(const httplib::Result& r) { return json::parse(r->body); }

torch::Tensor local_logits(const std::string& path, const torch::Tensor& x) {
  torch::NoGradGuard ng;
  return model::Model::load(path).logits(x);
}

std::vector<float> as_vector(const torch::Tensor& t) {
  const auto c = t.contiguous();
  return {c.data_ptr<float>(), c.data_ptr<float>() + c.numel()};
}

TEST(Http, HealthAndMetadataFollowTheProtocol) {
  TestServer s;
  auto c = s.client("");  // health and server metadata need no token
  auto live = c.Get("/v2/health/live");
  ASSERT_TRUE(live);
  EXPECT_EQ(live->status, 200);
  EXPECT_EQ(body_json(live), json({{"live", true}}));  // KServe's Python client calls .json() on it
  EXPECT_EQ(c.Get("/v2/health/ready")->status, 200);
  const auto meta = body_json(c.Get("/v2"));
  EXPECT_EQ(meta["name"], "bulwark");
  EXPECT_FALSE(meta["version"].get<std::string>().empty());
  EXPECT_NE(meta["extensions"].dump().find("binary_tensor_data"), std::string::npos);

  auto a = s.client();
  const auto md = a.Get("/v2/models/fashion");
  ASSERT_EQ(md->status, 200) << md->body;
  const auto m = body_json(md);
  EXPECT_EQ(m["name"], "fashion");
  EXPECT_EQ(m["versions"], json::array({"1"}));
  EXPECT_EQ(m["inputs"][0]["name"], "input");
  EXPECT_EQ(m["inputs"][0]["shape"], json::array({-1, 1, 28, 28}));
  EXPECT_EQ(m["outputs"][0]["shape"], json::array({-1, 10}));
  EXPECT_EQ(a.Get("/v2/models/fashion/versions/1")->status, 200);
  EXPECT_EQ(a.Get("/v2/models/fashion/ready")->status, 200);
  EXPECT_EQ(a.Get("/v2/models/fashion/versions/1/ready")->status, 200);
  EXPECT_EQ(a.Get("/v2/models/fashion/versions/7/ready")->status, 400);  // 4xx = false
  EXPECT_EQ(a.Get("/v2/models/nope/ready")->status, 400);
  const auto missing = a.Get("/v2/models/nope");
  EXPECT_EQ(missing->status, 404);
  EXPECT_NE(body_json(missing)["error"].get<std::string>().find("nope"), std::string::npos);
  const auto bad_version = a.Get("/v2/models/fashion/versions/7");
  EXPECT_EQ(bad_version->status, 404);
  const auto no_route = a.Get("/v2/elsewhere");
  EXPECT_EQ(no_route->status, 404);
  EXPECT_TRUE(body_json(no_route).contains("error"));
}

TEST(Http, InferMatchesTheModelAndEchoesTheId) {
  TestServer s;
  auto c = s.client();
  torch::manual_seed(3);
  const auto x = torch::rand({2, 1, 28, 28});
  json req{{"id", "abc-42"},
           {"inputs", {{{"name", "input"}, {"shape", {2, 1, 28, 28}}, {"datatype", "FP32"}, {"data", as_vector(x)}}}},
           {"outputs", {{{"name", "logits"}}, {{"name", "probabilities"}}, {{"name", "label"}}}}};
  const auto r = c.Post("/v2/models/fashion/infer", req.dump(), "application/json");
  ASSERT_EQ(r->status, 200) << r->body;
  const auto j = body_json(r);
  EXPECT_EQ(j["id"], "abc-42");
  EXPECT_EQ(j["model_name"], "fashion");
  EXPECT_EQ(j["model_version"], "1");
  const auto expected = local_logits(s.model_a, x);
  const auto got = torch::tensor(j["outputs"][0]["data"].get<std::vector<float>>()).view({2, 10});
  EXPECT_EQ(j["outputs"][0]["shape"], json::array({2, 10}));
  EXPECT_TRUE(torch::allclose(got, expected, 1e-4, 1e-5));
  const auto probs = torch::tensor(j["outputs"][1]["data"].get<std::vector<float>>()).view({2, 10});
  EXPECT_TRUE(torch::allclose(probs, torch::softmax(expected, 1), 1e-4, 1e-6));
  const auto labels = j["outputs"][2]["data"].get<std::vector<std::string>>();
  ASSERT_EQ(labels.size(), 2u);
  EXPECT_EQ(labels[0], std::to_string(expected.argmax(1)[0].item<int64_t>()));
  // The guard: hidden from role infer (scores are a free signal for an attacker); an admin token
  // gets one score per input, in [0, 1], consistent with max-softmax.
  EXPECT_FALSE(j.contains("parameters") && j["parameters"].contains("attack_score")) << j.dump();
  const auto admin = s.client(kAdminToken).Post("/v2/models/fashion/infer", req.dump(), "application/json");
  ASSERT_EQ(admin->status, 200) << admin->body;
  const auto ja = body_json(admin);
  const auto& p = ja["parameters"];
  EXPECT_EQ(p["attack_scorer"], "max-softmax");
  const double expected_max = (1.0 - torch::softmax(expected, 1).amax(1)).max().item<double>();
  EXPECT_NEAR(p["attack_score"].get<double>(), expected_max, 1e-4);
  const auto scores = p["attack_scores"].get<std::string>();
  EXPECT_EQ(std::count(scores.begin(), scores.end(), ','), 1) << scores;  // two inputs, two scores
}

TEST(Http, NestedDataFlatShapesAndUint8AgreeWithFlatFp32) {
  TestServer s;
  auto c = s.client();
  std::vector<float> pixels(784);
  for (size_t i = 0; i < pixels.size(); ++i) pixels[i] = static_cast<float>(i % 256);
  std::vector<float> scaled(784);
  for (size_t i = 0; i < 784; ++i) scaled[i] = pixels[i] / 255.0f;
  auto logits_of = [&](const json& input) {
    const auto r = c.Post("/v2/models/fashion/infer", json{{"inputs", {input}}}.dump(), "application/json");
    EXPECT_EQ(r->status, 200) << r->body;
    return json::parse(r->body)["outputs"][0]["data"].get<std::vector<float>>();
  };
  const auto flat = logits_of({{"name", "input"}, {"shape", {1, 1, 28, 28}}, {"datatype", "FP32"}, {"data", scaled}});
  json rows = json::array();
  for (int h = 0; h < 28; ++h) rows.push_back(std::vector<float>(scaled.begin() + h * 28, scaled.begin() + h * 28 + 28));
  const auto nested = logits_of({{"name", "input"}, {"shape", {1, 1, 28, 28}}, {"datatype", "FP32"},
                                 {"data", json::array({json::array({rows})})}});
  const auto vec = logits_of({{"name", "input"}, {"shape", {1, 784}}, {"datatype", "FP32"}, {"data", scaled}});
  const auto u8 = logits_of({{"name", "input"}, {"shape", {1, 28, 28}}, {"datatype", "UINT8"}, {"data", pixels}});
  for (size_t k = 0; k < flat.size(); ++k) {
    EXPECT_FLOAT_EQ(nested[k], flat[k]);
    EXPECT_FLOAT_EQ(vec[k], flat[k]);
    EXPECT_NEAR(u8[k], flat[k], 1e-5);
  }
}

std::string binary_request(const torch::Tensor& x, bool binary_output, size_t* json_len) {
  json header{{"inputs",
               {{{"name", "input"},
                 {"shape", x.sizes().vec()},
                 {"datatype", "FP32"},
                 {"parameters", {{"binary_data_size", x.numel() * 4}}}}}},
              {"outputs", {{{"name", "logits"}, {"parameters", {{"binary_data", binary_output}}}}}}};
  auto text = header.dump();
  *json_len = text.size();
  const auto c = x.contiguous();
  text.append(reinterpret_cast<const char*>(c.data_ptr<float>()), static_cast<size_t>(c.numel()) * 4);
  return text;
}

TEST(Http, BinaryTensorExtensionBothWays) {
  TestServer s;
  auto c = s.client();
  torch::manual_seed(5);
  const auto x = torch::rand({3, 1, 28, 28});
  size_t json_len = 0;
  const auto body = binary_request(x, /*binary_output=*/true, &json_len);
  const httplib::Headers h{{"Inference-Header-Content-Length", std::to_string(json_len)}};
  const auto r = c.Post("/v2/models/fashion/infer", h, body, "application/octet-stream");
  ASSERT_EQ(r->status, 200) << r->body;
  ASSERT_TRUE(r->has_header("Inference-Header-Content-Length"));
  const size_t n = std::stoul(r->get_header_value("Inference-Header-Content-Length"));
  const auto j = json::parse(r->body.substr(0, n));
  const auto& out = j["outputs"][0];
  ASSERT_EQ(out["parameters"]["binary_data_size"], 3 * 10 * 4);
  ASSERT_EQ(r->body.size(), n + 3 * 10 * 4);
  std::vector<float> got(30);
  std::memcpy(got.data(), r->body.data() + n, 120);
  EXPECT_TRUE(torch::allclose(torch::tensor(got).view({3, 10}), local_logits(s.model_a, x), 1e-4, 1e-5));

  // Binary in, JSON out.
  const auto body2 = binary_request(x, false, &json_len);
  const auto r2 = c.Post("/v2/models/fashion/infer",
                         httplib::Headers{{"Inference-Header-Content-Length", std::to_string(json_len)}}, body2,
                         "application/octet-stream");
  ASSERT_EQ(r2->status, 200) << r2->body;
  EXPECT_FALSE(r2->has_header("Inference-Header-Content-Length"));
  EXPECT_EQ(json::parse(r2->body)["outputs"][0]["data"].size(), 30u);

  // NaN can only arrive as binary: rejected, naming the input and the rule.
  auto nan_x = x.clone();
  nan_x.view(-1)[17] = std::nanf("");
  const auto body3 = binary_request(nan_x, false, &json_len);
  const auto r3 = c.Post("/v2/models/fashion/infer",
                         httplib::Headers{{"Inference-Header-Content-Length", std::to_string(json_len)}}, body3,
                         "application/octet-stream");
  EXPECT_EQ(r3->status, 400);
  EXPECT_NE(r3->body.find("NaN"), std::string::npos) << r3->body;
  EXPECT_NE(r3->body.find("index 17"), std::string::npos) << r3->body;
}

TEST(Http, AuthenticationAndRoles) {
  TestServer s;
  const auto body = infer_body().dump();
  auto none = s.client("");
  const auto r401 = none.Post("/v2/models/fashion/infer", body, "application/json");
  EXPECT_EQ(r401->status, 401);
  EXPECT_EQ(r401->get_header_value("WWW-Authenticate"), "Bearer");
  EXPECT_EQ(s.client("wrong").Post("/v2/models/fashion/infer", body, "application/json")->status, 401);
  EXPECT_EQ(s.client(kFeedbackToken).Post("/v2/models/fashion/infer", body, "application/json")->status, 403);
  EXPECT_EQ(s.client(kInferToken).Post("/v2/models/fashion/infer", body, "application/json")->status, 200);
  EXPECT_EQ(s.client("").Get("/v2/models/fashion")->status, 401);
  // Model control needs admin.
  EXPECT_EQ(s.client(kInferToken).Post("/v2/repository/index", "", "application/json")->status, 403);
  const auto idx = s.client(kAdminToken).Post("/v2/repository/index", "", "application/json");
  ASSERT_EQ(idx->status, 200);
  EXPECT_EQ(body_json(idx)[0]["state"], "READY");
  // A POST with no body and no Content-Length (curl -X POST) is an empty body, not an error.
  const auto raw = run_command("curl -s -o /dev/null -w '%{http_code}' -X POST -H 'Authorization: Bearer " +
                               std::string(kAdminToken) + "' http://127.0.0.1:" + std::to_string(s.http->port()) +
                               "/v2/repository/index");
  EXPECT_EQ(raw.output, "200");
  // Health and metrics stay open.
  EXPECT_EQ(none.Get("/v2/health/ready")->status, 200);
  EXPECT_EQ(none.Get("/metrics")->status, 200);
}

TEST(Http, RateLimitAnswers429WithRetryAfter) {
  TestServer s;
  auto c = s.client(kSlowToken);  // 2 requests/s, burst 2
  const auto body = infer_body().dump();
  int ok = 0, limited = 0;
  std::string retry_after;
  // Back to back until limited. The bucket holds 2 and earns 2 per second, so at most 2 + 2 x the
  // elapsed seconds (+1 for a token earned as the loop ends) can pass, however slow the requests
  // are (the sanitizer build is): without a limiter all 20 would.
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < 20 && limited < 2; ++i) {
    const auto r = c.Post("/v2/models/fashion/infer", body, "application/json");
    ASSERT_TRUE(r) << "request " << i;
    if (r->status == 200) ++ok;
    if (r->status == 429) {
      ++limited;
      retry_after = r->get_header_value("Retry-After");
      EXPECT_NE(r->body.find("rate limit"), std::string::npos);
    }
  }
  const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_GE(ok, 2) << "the burst of 2 was not allowed";
  EXPECT_LE(ok, 2 + static_cast<int>(2 * elapsed) + 1) << "more passed than the bucket earned in " << elapsed << " s";
  ASSERT_EQ(limited, 2) << ok << " passed in " << elapsed << " s and none was limited";
  EXPECT_GE(std::stoi(retry_after), 1);
  // Other tokens are not limited by it.
  EXPECT_EQ(s.client(kInferToken).Post("/v2/models/fashion/infer", body, "application/json")->status, 200);
}

TEST(Http, ValidationErrorsNameTheInputAndTheRule) {
  TestServer s;
  auto c = s.client();
  struct Case {
    std::string what;
    json body;
    std::string expect;
  };
  auto with = [](const std::string& key, json value) {
    auto b = infer_body();
    b["inputs"][0][key] = std::move(value);
    return b;
  };
  auto out_of_range = infer_body();
  out_of_range["inputs"][0]["data"][100] = 1.5;
  const std::vector<Case> cases = {
      {"wrong input name", with("name", "pixels"), "unknown input 'pixels'"},
      {"unsupported datatype", with("datatype", "INT64"), "datatype 'INT64'"},
      {"shape that does not fit", with("shape", json::array({1, 3, 28, 28})), "does not fit"},
      {"too few values", with("shape", json::array({2, 1, 28, 28})), "holds 1568 values, got 784"},
      {"negative dim", with("shape", json::array({1, -1, 28, 28})), "shape[1] = -1"},
      {"huge shape", with("shape", json::array({100000, 100000, 28, 28})), "exceeds the limit"},
      {"value out of range", out_of_range, "value 1.5 at index 100"},
      {"unknown output", [] { auto b = infer_body(); b["outputs"] = {{{"name", "softmax"}}}; return b; }(),
       "output 'softmax'"},
  };
  for (const auto& k : cases) {
    const auto r = c.Post("/v2/models/fashion/infer", k.body.dump(), "application/json");
    EXPECT_EQ(r->status, 400) << k.what << ": " << r->body;
    EXPECT_NE(body_json(r)["error"].get<std::string>().find(k.expect), std::string::npos) << k.what << ": " << r->body;
  }
  // UINT8 must be whole numbers in 0..255.
  auto u8 = infer_body(1, 0.5f, "UINT8");
  const auto r = c.Post("/v2/models/fashion/infer", u8.dump(), "application/json");
  EXPECT_EQ(r->status, 400);
  EXPECT_NE(r->body.find("UINT8"), std::string::npos);
  EXPECT_EQ(c.Post("/v2/models/nope/infer", infer_body().dump(), "application/json")->status, 404);
}

TEST(Http, MalformedRequestCorpusGets4xxAndTheServerKeepsServing) {
  TestServer s;
  std::ifstream in(std::string(BULWARK_TESTS_DIR) + "/serve/cases/malformed.json");
  ASSERT_TRUE(in) << "missing cases file";
  const auto cases = json::parse(in);
  ASSERT_GE(cases.size(), 10u);
  auto c = s.client();
  for (const auto& k : cases) {
    std::string body = k.contains("raw") ? k["raw"].get<std::string>() : k["json"].dump();
    if (k.contains("repeat")) {  // e.g. deep nesting built from a fragment
      std::string b;
      for (int i = 0; i < k["repeat"].get<int>(); ++i) b += k["raw"].get<std::string>();
      body = k.value("prefix", "") + b;
    }
    httplib::Headers h;
    if (k.contains("headers")) {
      for (const auto& [key, v] : k["headers"].items()) h.emplace(key, v.get<std::string>());
    }
    const auto r = c.Post(k.value("path", "/v2/models/fashion/infer"), h, body, "application/json");
    ASSERT_TRUE(r) << k["name"];
    EXPECT_GE(r->status, 400) << k["name"] << ": " << r->body;
    EXPECT_LT(r->status, 500) << k["name"] << ": " << r->body;
    EXPECT_TRUE(json::parse(r->body).contains("error")) << k["name"] << ": " << r->body;
  }
  EXPECT_EQ(c.Post("/v2/models/fashion/infer", infer_body().dump(), "application/json")->status, 200);
}

TEST(Http, BodyOverTheLimitGets413) {
  TestServer s({}, true, /*max_body=*/64 * 1024);
  const auto r = s.client().Post("/v2/models/fashion/infer", infer_body(40).dump(), "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 413);
  EXPECT_NE(r->body.find("--max-body-bytes"), std::string::npos);
}

TEST(Http, HotSwapUnderConcurrentLoadFailsNoRequest) {
  TestServer s;
  std::atomic<bool> stop{false};
  std::atomic<int> ok{0}, failed{0};
  std::atomic<int> saw_new{0};
  std::vector<std::thread> clients;
  for (int t = 0; t < 8; ++t) {
    clients.emplace_back([&] {
      auto c = s.client();
      const auto body = infer_body().dump();
      while (!stop) {
        const auto r = c.Post("/v2/models/fashion/infer", body, "application/json");
        if (r && r->status == 200) {
          ++ok;
          if (json::parse(r->body)["model_version"] != "1") ++saw_new;
        } else {
          ++failed;
        }
      }
    });
  }
  auto admin = s.client(kAdminToken);
  // Swap between the two models six times while the clients keep sending.
  for (int i = 0; i < 6; ++i) {
    const int before = ok.load();
    while (ok.load() < before + 20) std::this_thread::yield();  // let traffic run between swaps
    const json load{{"parameters", {{"path", i % 2 == 0 ? "b.pt" : "a.pt"}}}};  // relative to the model root
    const auto r = admin.Post("/v2/repository/models/fashion/load", load.dump(), "application/json");
    ASSERT_EQ(r->status, 200) << r->body;
    EXPECT_EQ(body_json(r)["version"], std::to_string(i + 2));
  }
  const int before = ok.load();
  while (ok.load() < before + 20) std::this_thread::yield();
  stop = true;
  for (auto& t : clients) t.join();
  EXPECT_EQ(failed.load(), 0);
  EXPECT_GT(ok.load(), 100);
  EXPECT_GT(saw_new.load(), 0);
  // New requests see the last model loaded: the sixth swap made version 7.
  const auto r = s.client().Post("/v2/models/fashion/infer", infer_body().dump(), "application/json");
  EXPECT_EQ(body_json(r)["model_version"], "7");
}

TEST(Http, UnloadThenLoadAgain) {
  TestServer s;
  auto admin = s.client(kAdminToken);
  EXPECT_EQ(admin.Post("/v2/repository/models/fashion/unload", "", "application/json")->status, 200);
  EXPECT_EQ(s.client().Post("/v2/models/fashion/infer", infer_body().dump(), "application/json")->status, 404);
  EXPECT_EQ(s.client("").Get("/v2/health/ready")->status, 400);  // no model: not ready
  const auto idx = body_json(admin.Post("/v2/repository/index", "", "application/json"));
  EXPECT_EQ(idx[0]["state"], "UNAVAILABLE");
  EXPECT_EQ(admin.Post("/v2/repository/models/fashion/unload", "", "application/json")->status, 404);
  // No path given: reload from where it came from.
  const auto r = admin.Post("/v2/repository/models/fashion/load", "", "application/json");
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(body_json(r)["version"], "2");
  EXPECT_EQ(s.client().Post("/v2/models/fashion/infer", infer_body().dump(), "application/json")->status, 200);
  // A bad file fails the load and keeps the model serving.
  const auto bad = admin.Post("/v2/repository/models/fashion/load",
                              json{{"parameters", {{"path", "missing.pt"}}}}.dump(), "application/json");
  EXPECT_EQ(bad->status, 404) << bad->body;
  EXPECT_EQ(s.client().Post("/v2/models/fashion/infer", infer_body().dump(), "application/json")->status, 200);
}

TEST(Http, RepositoryLoadTakesNoPathOutsideTheModelRoot) {
  TempDir outside;
  const auto elsewhere = write_model(outside, "x.pt", "mlp", 3);
  serve::CoreOptions o;
  TempDir root;
  o.source.model_root = root.path();
  std::filesystem::copy_file(write_model(root, "ok.pt", "mlp", 4), root.file("ok2.pt"));
  std::filesystem::create_symlink(elsewhere, root.file("escape.pt"));
  TestServer s(o);
  auto admin = s.client(kAdminToken);
  const auto load = [&admin](const std::string& path) {
    return admin.Post("/v2/repository/models/fashion/load", json{{"parameters", {{"path", path}}}}.dump(),
                      "application/json");
  };
  for (const std::string& bad : {elsewhere, std::string("../") + "x.pt", std::string("sub/../../x.pt"), std::string("escape.pt")}) {
    const auto r = load(bad);
    EXPECT_EQ(r->status, 403) << bad << ": " << r->body;
    // The refusal does not say whether the file exists.
    EXPECT_EQ(r->body.find(outside.path()), std::string::npos) << r->body;
  }
  EXPECT_EQ(load("ok2.pt")->status, 200);
  // Without authentication nobody is admin: the repository API is closed.
  TestServer open_server(serve::CoreOptions{}, /*auth=*/false);
  const auto r = open_server.client("").Post("/v2/repository/models/fashion/load", "", "application/json");
  EXPECT_EQ(r->status, 403) << r->body;
  EXPECT_NE(r->body.find("--tokens"), std::string::npos) << r->body;
}

// A model root that disappears while the server runs confines as before: a relative path does not
// fall back to the working directory (before: it resolved there and loaded).
TEST(Http, RepositoryLoadWithAVanishedModelRootLoadsNothing) {
  serve::CoreOptions o;
  auto root = std::make_unique<TempDir>();
  o.source.model_root = root->path();
  TestServer s(o);
  const std::string name = "bw-vanished-root-" + std::to_string(::getpid()) + ".pt";
  std::filesystem::copy_file(s.model_a, name);  // in the test's working directory
  root.reset();
  const auto r = s.client(kAdminToken).Post("/v2/repository/models/fashion/load",
                                            json{{"parameters", {{"path", name}}}}.dump(), "application/json");
  std::filesystem::remove(name);
  EXPECT_EQ(r->status, 404) << r->body;
  EXPECT_NE(r->body.find("--model-root"), std::string::npos) << r->body;
}

TEST(Http, MetricsPassPromtoolAndCountRequests) {
  TestServer s;
  auto c = s.client();
  for (int i = 0; i < 3; ++i) EXPECT_EQ(c.Post("/v2/models/fashion/infer", infer_body().dump(), "application/json")->status, 200);
  EXPECT_EQ(c.Post("/v2/models/fashion/infer", "{", "application/json")->status, 400);
  const auto m = s.client("").Get("/metrics");
  ASSERT_EQ(m->status, 200);
  EXPECT_NE(m->body.find("bulwark_inference_request_success_total{model=\"fashion\",version=\"1\"} 3\n"),
            std::string::npos)
      << m->body;
  EXPECT_NE(m->body.find("bulwark_inference_request_failure_total{model=\"fashion\",version=\"1\",reason=\"invalid_argument\"} 1"),
            std::string::npos)
      << m->body;
  EXPECT_NE(m->body.find("bulwark_model_info{model=\"fashion\",version=\"1\"} 1"), std::string::npos);
  // The detector's series are not public: an anonymous diff around one request would read its flag.
  EXPECT_EQ(m->body.find("bulwark_attack_score"), std::string::npos) << m->body;
  const auto full = s.client(kAdminToken).Get("/metrics");
  ASSERT_EQ(full->status, 200);
  EXPECT_NE(full->body.find("bulwark_attack_score_count{model=\"fashion\",version=\"1\"} 3"), std::string::npos);
  EXPECT_EQ(s.client("not-a-token").Get("/metrics")->status, 401);
  for (const auto* body : {&m->body, &full->body}) {
    const auto path = s.dir.file("scrape.txt");
    std::ofstream(path) << *body;
    const auto check = run_command("promtool check metrics < " + path);
    EXPECT_EQ(check.exit_code, 0) << check.output;
  }
}

TEST(Http, AccessLogHasTokenIdsNeverTokens) {
  TestServer s;
  EXPECT_EQ(s.client().Post("/v2/models/fashion/infer", infer_body().dump(), "application/json")->status, 200);
  EXPECT_EQ(s.client(kFeedbackToken).Post("/v2/models/fashion/infer", infer_body().dump(), "application/json")->status,
            403);
  std::ifstream in(s.dir.file("access.jsonl"));
  std::string line, all;
  std::vector<json> lines;
  while (std::getline(in, line)) {
    all += line;
    lines.push_back(json::parse(line));
  }
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[0]["token_id"], "client");
  EXPECT_EQ(lines[0]["request_id"], "req-1");
  EXPECT_EQ(lines[0]["status"], 200);
  EXPECT_EQ(lines[0]["model"], "fashion");
  EXPECT_EQ(lines[0]["version"], "1");
  EXPECT_TRUE(lines[0].contains("score"));
  EXPECT_GT(lines[0]["latency_ms"].get<double>(), 0.0);
  EXPECT_EQ(lines[1]["status"], 403);
  EXPECT_EQ(all.find(kInferToken), std::string::npos);
  EXPECT_EQ(all.find(kFeedbackToken), std::string::npos);
}

// A client-chosen field is cut: a 4 KB model name in the URL of a request without a token costs the
// log a bounded line (before: the whole name, per request; httplib refuses URLs of 8 KB and more).
TEST(Http, AccessLogFieldsAreBounded) {
  TestServer s;
  const std::string name(4000, 'm');
  const auto r = s.client("").Post("/v2/models/" + name + "/infer", infer_body().dump(), "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 401);
  std::ifstream in(s.dir.file("access.jsonl"));
  std::string line;
  ASSERT_TRUE(std::getline(in, line));
  EXPECT_LT(line.size(), 1024u) << line.size();
  const auto j = json::parse(line);
  EXPECT_EQ(j["status"], 401);
  EXPECT_EQ(j["model"], std::string(256, 'm') + "...(+3744 bytes)");
}

}  // namespace
}  // namespace bulwark::testing

namespace bulwark::testing {
namespace {

TEST(Http, DrainingAnswers503AndNotReady) {
  TestServer s;
  EXPECT_EQ(s.client("").Get("/v2/health/ready")->status, 200);
  s.core->begin_drain();
  EXPECT_EQ(s.client("").Get("/v2/health/ready")->status, 400);
  EXPECT_EQ(s.client("").Get("/v2/health/live")->status, 200);  // alive while it drains
  const auto r = s.client().Post("/v2/models/fashion/infer", infer_body().dump(), "application/json");
  EXPECT_EQ(r->status, 503);
  EXPECT_NE(r->body.find("shutting down"), std::string::npos);
}

}  // namespace
}  // namespace bulwark::testing
