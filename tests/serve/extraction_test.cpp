// The extraction detector on the real serve path (HTTP, the fixture's untrained model, whose
// answers are all unsure: top probability near 0.1): flag, throttle and block per client, the answer
// that crosses the threshold withheld, events, metrics only for a token with the metrics role.
#include <gtest/gtest.h>

#include <torch/torch.h>

#include <set>
#include <sstream>
#include <string>

#include "server_fixture.h"

namespace bulwark::testing {
namespace {

using nlohmann::json;

serve::CoreOptions extraction_server(const std::string& policy) {
  serve::CoreOptions o;
  o.guard.extraction = policy;
  // PRADA off here (its statistic is tested in tests/detect); the unsure share after 5 answers.
  o.guard.extraction_options.delta(0).min_answers(5).answer_window(5).max_unsure_share(0.5).block_s(600);
  o.guard.throttle_interval_s = 3600;
  return o;
}

int post(TestServer& s, const std::string& token, uint64_t seed, std::string* body = nullptr) {
  torch::manual_seed(seed);
  const auto x = torch::rand({1, 1, 28, 28});
  json j{{"inputs",
          {{{"name", "input"},
            {"shape", {1, 1, 28, 28}},
            {"datatype", "FP32"},
            {"data", std::vector<float>(x.data_ptr<float>(), x.data_ptr<float>() + x.numel())}}}}};
  const auto r = s.client(token).Post("/v2/models/fashion/infer", j.dump(), "application/json");
  if (body) *body = r->body;
  return r->status;
}

TEST(Extraction, PolicyFlagThrottleBlockThroughTheServer) {
  for (const std::string policy : {"flag", "throttle", "block"}) {
    TestServer s(extraction_server(policy));
    std::vector<int> status;
    std::string last;
    for (int q = 0; q < 8; ++q) status.push_back(post(s, kInferToken, 100 + q, &last));
    for (int q = 0; q < 4; ++q) EXPECT_EQ(status[q], 200) << policy << " query " << q;
    const int refused = policy == "block" ? 403 : policy == "throttle" ? 429 : 200;
    if (policy == "throttle") {
      // The crossing answer is the throttled client's one request of the interval; the next are 429.
      EXPECT_EQ(status[4], 200);
      for (int q = 5; q < 8; ++q) EXPECT_EQ(status[q], 429) << q;
    } else {
      for (int q = 4; q < 8; ++q) EXPECT_EQ(status[q], refused) << policy << " query " << q;
    }
    if (policy != "flag") {
      EXPECT_NE(last.find("extraction detector"), std::string::npos) << last;
    }
    EXPECT_EQ(post(s, kAdminToken, 1), 200) << "another client is not affected";
    bool found = false;
    for (const auto& e : s.core->guard().events().recent(10)) {
      if (e.detector != "extraction") continue;
      found = true;
      EXPECT_EQ(e.subject, "token:client");
      EXPECT_EQ(e.kind, policy == "flag" ? "client.flagged" : policy == "block" ? "client.blocked" : "client.throttled");
      EXPECT_EQ(e.details["statistic"], "unsure_share");
    }
    EXPECT_TRUE(found) << policy;
    const auto st = s.core->guard().status(serve::unix_now_s())["extraction"];
    EXPECT_EQ(st["flagged_clients"], 1);
    EXPECT_EQ(st["blocked_clients"], policy == "block" ? 1 : 0);
  }
}

// Scrapers without the metrics role see nothing of the extraction detector: not that it exists,
// not that a client was flagged.
TEST(Extraction, MetricsAreHiddenFromAnonymousScrapers) {
  TestServer s(extraction_server("block"));
  for (int q = 0; q < 6; ++q) post(s, kInferToken, 200 + q);
  ASSERT_EQ(post(s, kInferToken, 300), 403);
  const auto anon = s.client("").Get("/metrics");
  ASSERT_EQ(anon->status, 200);
  EXPECT_EQ(anon->body.find("bulwark_extraction_"), std::string::npos) << "anonymous scrape shows extraction series";
  EXPECT_EQ(s.client(kInferToken).Get("/metrics")->body.find("bulwark_extraction_"), std::string::npos);
  using serve::Role;
  s.core->set_tokens(serve::TokenStore::from_entries({{"prom", serve::sha256_hex("prom-secret"), {Role::kMetrics}, 0, 0}}));
  const auto full = s.client("prom-secret").Get("/metrics");
  ASSERT_EQ(full->status, 200);
  EXPECT_NE(full->body.find("bulwark_extraction_flagged_total{policy=\"block\",statistic=\"unsure_share\"} 1"),
            std::string::npos) << full->body;
  EXPECT_NE(full->body.find("bulwark_extraction_refused_total"), std::string::npos);
  EXPECT_NE(full->body.find("bulwark_extraction_memory_bytes{kind=\"cap\"}"), std::string::npos);
}

TEST(Extraction, BadServeOptionsAreRefusedNamingTheFlag) {
  serve::Metrics m;
  serve::GuardOptions g;
  g.extraction = "escalate";
  try {
    serve::Guard guard(g, m);
    FAIL() << "escalate accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--extraction"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace bulwark::testing
