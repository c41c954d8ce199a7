// The serve module's parts on their own: status mapping, metrics text, tokens, batching, config,
// the request's score / respond / record stages.
#include <gtest/gtest.h>

#include <atomic>
#include <future>
#include <thread>

#include <torch/torch.h>

#include "core/files.h"
#include "serve/auth.h"
#include "serve/batcher.h"
#include "serve/config.h"
#include "serve/detail/request_stages.h"
#include "serve/metrics.h"
#include "serve/rest_codec.h"
#include "serve/status.h"
#include "test_util.h"

namespace bulwark::serve {
namespace {

TEST(Status, OneTableForBothTransports) {
  struct Row {
    ErrorKind kind;
    int http;
    int grpc;
  };
  const Row rows[] = {
      {ErrorKind::kInvalidArgument, 400, 3},  {ErrorKind::kDataFormat, 400, 3},
      {ErrorKind::kUnauthenticated, 401, 16}, {ErrorKind::kPermissionDenied, 403, 7},
      {ErrorKind::kNotFound, 404, 5},         {ErrorKind::kResourceExhausted, 429, 8},
      {ErrorKind::kUnavailable, 503, 14},     {ErrorKind::kInternal, 500, 13},
      {ErrorKind::kIo, 500, 13},
  };
  for (const auto& r : rows) {
    EXPECT_EQ(http_status(r.kind), r.http) << to_string(r.kind);
    EXPECT_EQ(grpc_code(r.kind), r.grpc) << to_string(r.kind);
  }
}

// score: flagged means strictly above the calibrated threshold; no scores, no flags.
TEST(RequestStages, ScoreFlagsRowsStrictlyAboveTheThreshold) {
  const auto s = detail::score_rows(torch::tensor({0.2f, 0.5f, 0.9f}), 0.5);
  ASSERT_TRUE(s.on());
  EXPECT_EQ(s.flagged, (std::vector<uint8_t>{0, 0, 1}));
  EXPECT_NEAR(s.at(2), 0.9, 1e-6);
  const auto off = detail::score_rows(at::Tensor(), 0.5);
  EXPECT_FALSE(off.on());
  EXPECT_TRUE(off.flagged.empty());
}

// respond: a caller the guard hides scores from gets none (no oracle of the detector), while the
// access record and the metrics count every row either way.
TEST(RequestStages, RespondShowsScoresOnlyToThoseTheGuardExposesThemTo) {
  const auto s = detail::score_rows(torch::tensor({0.1, 0.95}, torch::kDouble), 0.5);
  for (const bool expose : {false, true}) {
    Metrics m;
    InferResponse resp;
    AccessRecord rec;
    detail::attach_scores(s, expose, "calibrated:pca", "fashion", "3", m, resp, rec);
    EXPECT_EQ(resp.attack_scores.size(), expose ? 2u : 0u);
    EXPECT_EQ(resp.attack_flags, expose ? (std::vector<bool>{false, true}) : (std::vector<bool>{}));
    EXPECT_EQ(resp.scorer, expose ? "calibrated:pca" : "");
    EXPECT_NEAR(rec.max_score, 0.95, 1e-6);
    EXPECT_TRUE(rec.flagged);
    const auto text = m.render();
    EXPECT_NE(text.find("bulwark_attack_flagged_total{model=\"fashion\",version=\"3\"} 1\n"), std::string::npos) << text;
    EXPECT_NE(text.find("bulwark_attack_score_count{model=\"fashion\",version=\"3\"} 2\n"), std::string::npos) << text;
  }
}

// record: one access-log line with the request's latency, and the success metrics of its version.
TEST(RequestStages, RecordWritesTheLineAndTheVersionsMetrics) {
  testing::TempDir dir;
  Metrics m;
  AccessRecord rec;
  rec.request_id = "r1";
  rec.model = "fashion";
  rec.version = "3";
  {
    AccessLog log(dir.file("access.jsonl"));
    BatchResult result;
    result.queue_s = 0.001;
    result.compute_s = 0.002;
    result.batch_rows = 4;
    detail::record_success("fashion", "3", result, 0.005, m, log, rec);
  }
  const auto line = nlohmann::json::parse(read_file(dir.file("access.jsonl")));
  EXPECT_EQ(line["request_id"], "r1");
  EXPECT_EQ(line["version"], "3");
  EXPECT_EQ(line["status"], 200);
  EXPECT_DOUBLE_EQ(rec.latency_s, 0.005);
  const auto text = m.render();
  EXPECT_NE(text.find("bulwark_inference_request_success_total{model=\"fashion\",version=\"3\"} 1\n"),
            std::string::npos) << text;
  EXPECT_NE(text.find("bulwark_batch_size_sum{model=\"fashion\",version=\"3\"} 4\n"), std::string::npos) << text;
}

TEST(Metrics, HistogramBucketsAreCumulativeAndLabelsEscaped) {
  Metrics m;
  m.batch_size("a\"b", "1", 3);
  m.batch_size("a\"b", "1", 3);
  m.batch_size("a\"b", "1", 100);
  const auto text = m.render();
  EXPECT_NE(text.find("bulwark_batch_size_bucket{model=\"a\\\"b\",version=\"1\",le=\"4\"} 2\n"), std::string::npos)
      << text;
  EXPECT_NE(text.find("bulwark_batch_size_bucket{model=\"a\\\"b\",version=\"1\",le=\"128\"} 3\n"), std::string::npos);
  EXPECT_NE(text.find("bulwark_batch_size_bucket{model=\"a\\\"b\",version=\"1\",le=\"+Inf\"} 3\n"), std::string::npos);
  EXPECT_NE(text.find("bulwark_batch_size_sum{model=\"a\\\"b\",version=\"1\"} 106\n"), std::string::npos);
  EXPECT_NE(text.find("# TYPE bulwark_inflight_requests gauge\nbulwark_inflight_requests 0\n"), std::string::npos);
  // The exposition format is UTF-8: no label value can put anything else into a scrape.
  EXPECT_EQ(escape_label_value("a\xff\xc3(b\xc3\xa9"), "a\xef\xbf\xbd\xef\xbf\xbd(b\xc3\xa9");
}

TEST(Auth, TokensFileRolesAndErrors) {
  testing::TempDir dir;
  const auto path = dir.file("tokens.yaml");
  std::ofstream(path) << "tokens:\n  - id: ci\n    sha256: " << sha256_hex("s3cret")
                      << "\n    roles: [infer, admin]\n";
  auto store = TokenStore::load(path);
  EXPECT_EQ(store->authorize("Bearer s3cret", Role::kAdmin).token_id, "ci");
  auto kind_of = [&](const std::string& header, Role role) {
    try {
      store->authorize(header, role);
      return std::string("ok");
    } catch (const Error& e) {
      return std::string(to_string(e.kind()));
    }
  };
  EXPECT_EQ(kind_of("", Role::kInfer), "unauthenticated");
  EXPECT_EQ(kind_of("Basic abc", Role::kInfer), "unauthenticated");
  EXPECT_EQ(kind_of("Bearer nope", Role::kInfer), "unauthenticated");
  EXPECT_EQ(kind_of("Bearer s3cret", Role::kFeedback), "permission denied");
  // The file holds no token, only its hash.
  EXPECT_EQ(bulwark::read_file(path).find("s3cret"), std::string::npos);

  auto bad = [&](const std::string& text, const std::string& expect) {
    std::ofstream(path) << text;
    try {
      TokenStore::load(path);
      ADD_FAILURE() << "accepted: " << text;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(expect), std::string::npos) << e.what();
    }
  };
  bad("tokens:\n  - id: x\n    sha256: abc\n    roles: [infer]\n", "tokens[0].sha256 must be 64 hex digits");
  bad("tokens:\n  - id: x\n    sha256: " + sha256_hex("a") + "\n    roles: [root]\n", "unknown role 'root'");
  bad("tokens:\n  - sha256: " + sha256_hex("a") + "\n    roles: [infer]\n", "tokens[0].id is required");
  bad("tokens: 5\n", "expected a 'tokens' list");
  bad("tokens: [\n", "not valid YAML");
  EXPECT_EQ(generate_token().size(), 64u);
  EXPECT_NE(generate_token(), generate_token());
}

// Without tokens: anonymous infer, never admin (Principal::admin false), never feedback (labels
// steer the monitor's accuracy alarm and the loop's roll-back).
TEST(Auth, WithoutTokensAnyoneInfersNobodyLabels) {
  TokenStore none;
  EXPECT_FALSE(none.enabled());
  EXPECT_FALSE(none.authorize("", Role::kInfer).admin);
  EXPECT_FALSE(none.authorize("", Role::kAdmin).admin);
  try {
    none.authorize("", Role::kFeedback);
    FAIL() << "anonymous feedback accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kPermissionDenied);
    EXPECT_NE(std::string(e.what()).find("--tokens"), std::string::npos) << e.what();
  }
}

TEST(Batcher, ConcurrentRequestsShareOneForwardPass) {
  std::vector<int64_t> batch_rows;
  std::mutex mu;
  DynamicBatcher b({/*max_batch=*/4, /*max_queue_delay_us=*/5'000'000, /*max_queue=*/16}, [&](const at::Tensor& x) {
    std::lock_guard<std::mutex> lock(mu);
    batch_rows.push_back(x.size(0));
    return std::make_pair(x.sum(1, true) * 1.0, at::Tensor());
  });
  std::vector<std::future<BatchResult>> fs;
  for (int i = 0; i < 4; ++i) fs.push_back(b.submit(torch::full({1, 3}, static_cast<float>(i))));
  for (int i = 0; i < 4; ++i) {
    const auto r = fs[i].get();
    EXPECT_EQ(r.batch_rows, 4);  // a full batch went at once, long before the 5 s deadline
    EXPECT_FLOAT_EQ(r.logits.item<float>(), 3.0f * i);  // each request gets its own rows back
  }
  EXPECT_EQ(batch_rows, std::vector<int64_t>{4});
}

TEST(Batcher, FullQueueRefusesAtOnceAndErrorsReachEveryRequest) {
  std::promise<void> started, release;
  auto release_f = release.get_future().share();
  std::atomic<bool> first{true};
  DynamicBatcher b({1, 0, /*max_queue=*/2}, [&](const at::Tensor& x) {  // rows queued or running
    if (first.exchange(false)) {
      started.set_value();
      release_f.wait();
    }
    if (x.min().item<float>() < 0) throw invalid_argument("negative");
    return std::make_pair(x, at::Tensor());
  });
  auto running = b.submit(torch::ones({1, 1}));
  started.get_future().wait();  // the batch thread holds the first request
  auto queued = b.submit(-torch::ones({1, 1}));
  try {
    b.submit(torch::ones({1, 1}));
    ADD_FAILURE() << "a full queue accepted a request";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kUnavailable);
    EXPECT_NE(std::string(e.what()).find("--max-queue"), std::string::npos);
  }
  release.set_value();
  EXPECT_NO_THROW(running.get());
  EXPECT_THROW(queued.get(), Error);
}

TEST(Batcher, AnAnswerWithTooFewRowsFailsTheWholeBatchAndTheThreadLives) {
  std::atomic<int> calls{0};
  DynamicBatcher b({/*max_batch=*/2, /*max_queue_delay_us=*/5'000'000, /*max_queue=*/4}, [&](const at::Tensor& x) {
    // The first batch gets one row back, whatever its size; later ones are answered in full.
    return std::make_pair(calls++ == 0 ? x.narrow(0, 0, 1) : x, at::Tensor());
  });
  auto first = b.submit(torch::ones({1, 3})), second = b.submit(torch::ones({1, 3}));  // one batch of 2
  for (auto* f : {&first, &second}) {
    try {
      f->get();
      ADD_FAILURE() << "a request got a row that was never computed for it";
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::kInternal);
      EXPECT_NE(std::string(e.what()).find("for a batch of 2 rows"), std::string::npos) << e.what();
    }
  }
  EXPECT_EQ(calls.load(), 1);
  EXPECT_EQ(b.submit(torch::ones({2, 3})).get().logits.size(0), 2);  // the batch thread lives on
}

TEST(Batcher, OptionsNameTheFlag) {
  EXPECT_THROW(BatcherOptions({0, 1, 1}).validate(), Error);
  try {
    BatcherOptions{1, -1, 1}.validate();
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--max-queue-delay-us"), std::string::npos);
  }
  try {
    BatcherOptions{8, 0, 4}.validate();  // a full request would never fit
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--max-queue"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("--max-batch"), std::string::npos) << e.what();
  }
}

TEST(RestCodec, ADocumentWithMoreValuesThanTheModelTakesIsRefusedWhileParsed) {
  RestLimits limits;
  limits.max_rows = 2;
  limits.values_per_row = 3;
  std::string body = R"({"inputs":[{"name":"input","shape":[1,3],"datatype":"FP32","data":[)";
  for (int i = 0; i < 5000; ++i) body += "[],";  // empty arrays count too
  try {
    parse_infer_request(body, std::nullopt, limits);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("more than 1030 values"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("2 rows of 3 values"), std::string::npos) << e.what();
  }
  const std::string ok = R"({"inputs":[{"name":"input","shape":[2,3],"datatype":"FP32","data":[1,2,3,4,5,6]}]})";
  EXPECT_EQ(parse_infer_request(ok, std::nullopt, limits).inputs[0].values.size(), 6u);
  const std::string rows = R"({"inputs":[{"name":"input","shape":[3,3],"datatype":"FP32","data":[]}]})";
  try {
    parse_infer_request(rows, std::nullopt, limits);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("3 rows exceed the limit of 2 rows per request (--max-batch)"),
              std::string::npos)
        << e.what();
  }
}

TEST(Config, YamlKeysAreFlagNames) {
  testing::TempDir dir;
  const auto path = dir.file("serve.yaml");
  std::ofstream(path) << "http-port: 9000\nmodel:\n  fashion: /m/a.pt\n  mnist: /m/b.pt\nguard: entropy\n";
  const auto entries = load_config_file(path);
  ASSERT_EQ(entries.size(), 3u);
  EXPECT_EQ(entries[0].key, "http-port");
  EXPECT_EQ(entries[0].values, std::vector<std::string>{"9000"});
  EXPECT_EQ(entries[1].values, (std::vector<std::string>{"fashion=/m/a.pt", "mnist=/m/b.pt"}));
  std::ofstream(path) << "http-port: {a: {b: 1}}\n";
  EXPECT_THROW(load_config_file(path), Error);
  EXPECT_THROW(load_config_file(dir.file("none.yaml")), Error);
  EXPECT_EQ(parse_model_arg("a=b.pt").second, "b.pt");
  EXPECT_THROW(parse_model_arg("=b.pt"), Error);
  EXPECT_THROW(parse_model_arg("a"), Error);
}

TEST(RestCodec, FormatsBinaryOutputsAfterTheJson) {
  InferResponse r;
  r.model = "m";
  r.version = "3";
  InferOutput o;
  o.name = "logits";
  o.datatype = "FP32";
  o.shape = {1, 2};
  o.fp32 = {1.5f, -2.0f};
  o.binary = true;
  r.outputs.push_back(o);
  std::optional<size_t> n;
  const auto body = format_infer_response(r, &n);
  ASSERT_TRUE(n.has_value());
  ASSERT_EQ(body.size(), *n + 8);
  const auto j = nlohmann::json::parse(body.substr(0, *n));
  EXPECT_EQ(j["outputs"][0]["parameters"]["binary_data_size"], 8);
  EXPECT_FALSE(j["outputs"][0].contains("data"));
  EXPECT_FALSE(j.contains("id"));  // no id asked, none echoed
  float back[2];
  std::memcpy(back, body.data() + *n, 8);
  EXPECT_EQ(back[0], 1.5f);
  EXPECT_EQ(back[1], -2.0f);
}

}  // namespace
}  // namespace bulwark::serve
