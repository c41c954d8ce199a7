// What an unauthenticated or hostile client can make the server do, against a real server on
// loopback: no metric series from names it chose, no body parsed before it is authenticated, and
// no JSON document built past what the model can take.
#include <grpcpp/grpcpp.h>

#include <fstream>
#include <sstream>

#include "grpc_predict_v2.grpc.pb.h"
#include "server_fixture.h"

namespace bulwark::testing {
namespace {

using nlohmann::json;

// True when `s` is well-formed UTF-8 (lead bytes C2..F4, each followed by its continuation bytes).
bool valid_utf8(const std::string& s) {
  for (size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    size_t n = 0;
    if (c >= 0x80) {
      if (c >= 0xC2 && c <= 0xDF)
        n = 1;
      else if (c >= 0xE0 && c <= 0xEF)
        n = 2;
      else if (c >= 0xF0 && c <= 0xF4)
        n = 3;
      else
        return false;
    }
    if (i + n >= s.size()) return false;
    for (size_t k = 1; k <= n; ++k) {
      if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return false;
    }
    i += n + 1;
  }
  return true;
}

TEST(Hostile, Utf8CheckerWorks) {
  EXPECT_TRUE(valid_utf8("plain ascii"));
  EXPECT_TRUE(valid_utf8("caf\xc3\xa9 \xe2\x82\xac"));
  EXPECT_FALSE(valid_utf8("\xff"));
  EXPECT_FALSE(valid_utf8("a\xc3"));
  EXPECT_FALSE(valid_utf8("\xc0\xaf"));
}

TEST(Hostile, NamesFromUnauthenticatedOrUnknownRequestsCreateNoMetricSeries) {
  TestServer s;
  auto anon = s.client("");
  // Unauthenticated: malformed bodies, valid bodies, invalid UTF-8 in the name.
  for (int i = 0; i < 20; ++i) {
    const auto path = "/v2/models/ghost-" + std::to_string(i) + "/infer";
    EXPECT_EQ(anon.Post(path, "{", "application/json")->status, 401);
    EXPECT_EQ(anon.Post(path, infer_body().dump(), "application/json")->status, 401);
    EXPECT_EQ(anon.Post("/v2/models/fashion/versions/ghost-v" + std::to_string(i) + "/infer", "{", "application/json")
                  ->status,
              401);
  }
  EXPECT_EQ(anon.Post("/v2/models/%FF%FEghost/infer", "{", "application/json")->status, 401);
  // Authenticated but naming models or versions that are not served.
  auto c = s.client();
  EXPECT_EQ(c.Post("/v2/models/ghost-known-token/infer", infer_body().dump(), "application/json")->status, 404);
  EXPECT_EQ(c.Post("/v2/models/%FFghost/infer", "{", "application/json")->status, 404);
  EXPECT_EQ(c.Post("/v2/models/fashion/versions/ghost-9/infer", "{", "application/json")->status, 404);
  // The same over gRPC.
  auto stub = inference::GRPCInferenceService::NewStub(
      grpc::CreateChannel(s.grpc_address(), grpc::InsecureChannelCredentials()));
  for (const std::string token : {"", kInferToken}) {
    inference::ModelInferRequest q;
    // (proto3 strings cannot carry invalid UTF-8: gRPC refuses such a message before any handler)
    q.set_model_name(std::string("grpc-ghost-") + (token.empty() ? "anon" : "auth"));
    q.set_model_version("ghost-version");
    auto* in = q.add_inputs();
    in->set_name("input");
    in->set_datatype("FP32");
    in->add_shape(-1);  // malformed too
    grpc::ClientContext ctx;
    if (!token.empty()) ctx.AddMetadata("authorization", "Bearer " + token);
    inference::ModelInferResponse r;
    const auto st = stub->ModelInfer(&ctx, q, &r);
    EXPECT_EQ(st.error_code(), token.empty() ? grpc::StatusCode::UNAUTHENTICATED : grpc::StatusCode::NOT_FOUND)
        << st.error_message();
  }

  const auto m = anon.Get("/metrics");
  ASSERT_EQ(m->status, 200);
  EXPECT_EQ(m->body.find("ghost"), std::string::npos) << m->body;
  EXPECT_TRUE(valid_utf8(m->body));
  // The failures are still counted, under one fixed label.
  EXPECT_NE(m->body.find("bulwark_inference_request_failure_total{model=\"unknown\",version=\"\",reason="
                         "\"unauthenticated\"} 62"),
            std::string::npos)
      << m->body;
  const auto path = s.dir.file("scrape.txt");
  std::ofstream(path) << m->body;
  const auto check = run_command("promtool check metrics < " + path);
  EXPECT_EQ(check.exit_code, 0) << check.output;
}

// Counts the exposition's sample lines (not HELP/TYPE) that carry `needle`.
size_t series_with(const std::string& exposition, const std::string& needle) {
  size_t n = 0;
  std::istringstream lines(exposition);
  for (std::string line; std::getline(lines, line);) n += line[0] != '#' && line.find(needle) != std::string::npos;
  return n;
}

// Each hot swap serves a new version; the series of the versions no longer served go, so swaps
// every few seconds do not grow /metrics (the soak bench saw 1,039 series become 9,572 in 10 min).
TEST(Hostile, HotSwapsDoNotGrowMetricSeries) {
  TestServer s;
  auto c = s.client();
  const auto body = infer_body().dump();
  ASSERT_EQ(c.Post("/v2/models/fashion/infer", body, "application/json")->status, 200);
  ASSERT_EQ(c.Post("/v2/models/fashion/infer", "{", "application/json")->status, 400);
  const size_t first = series_with(s.client("").Get("/metrics")->body, R"(model="fashion")");
  ASSERT_GT(first, 5u);
  std::string version;
  for (int i = 0; i < 6; ++i) {
    version = s.core->load_model("fashion", i % 2 == 0 ? s.model_b : s.model_a);
    ASSERT_EQ(c.Post("/v2/models/fashion/infer", body, "application/json")->status, 200);
    ASSERT_EQ(c.Post("/v2/models/fashion/infer", "{", "application/json")->status, 400);
  }
  const auto m = s.client("").Get("/metrics")->body;
  EXPECT_EQ(series_with(m, R"(model="fashion")"), first) << m;
  EXPECT_EQ(series_with(m, R"(version="1")"), 0u) << m;
  EXPECT_GT(series_with(m, "version=\"" + version + "\""), 5u) << m;
}

TEST(Hostile, TheBodyIsReadOnlyAfterAuthentication) {
  TestServer s;
  auto anon = s.client("");
  // A malformed body from an unknown caller is an authentication failure, not a parse error:
  // the parser never saw it.
  for (const std::string body : {"{", "[[[[[[[[[[", "not json"}) {
    const auto r = anon.Post("/v2/models/fashion/infer", body, "application/json");
    EXPECT_EQ(r->status, 401) << body << ": " << r->body;
  }
  const auto bad_header = anon.Post("/v2/models/fashion/infer", {{"Inference-Header-Content-Length", "abc"}},
                                    infer_body().dump(), "application/octet-stream");
  EXPECT_EQ(bad_header->status, 401) << bad_header->body;
  const auto wrong = s.client("wrong-token").Post("/v2/models/fashion/infer", "{", "application/json");
  EXPECT_EQ(wrong->status, 401) << wrong->body;
  const auto role = s.client(kFeedbackToken).Post("/v2/models/fashion/infer", "{", "application/json");
  EXPECT_EQ(role->status, 403) << role->body;
  // Authenticated: now it is parsed, and the error names what is wrong.
  const auto mine = s.client().Post("/v2/models/fashion/infer", "{", "application/json");
  EXPECT_EQ(mine->status, 400);
  EXPECT_NE(mine->body.find("not valid JSON"), std::string::npos) << mine->body;
}

TEST(Hostile, AJsonBodyHoldingMoreValuesThanTheModelTakesIsRefusedWhileItIsParsed) {
  TestServer s({}, true, /*max_body=*/8 << 20);
  // 400,000 zeros (the model takes at most --max-batch 32 rows of 784 = 25,088 values), and the
  // document never ends: refused on the count, long before the parser would reach the end.
  std::string body = R"({"inputs":[{"name":"input","shape":[1,1,28,28],"datatype":"FP32","data":[)";
  body.reserve(body.size() + 800'010);
  for (int i = 0; i < 400'000; ++i) body += "0,";
  const auto r = s.client().Post("/v2/models/fashion/infer", body, "application/json");
  ASSERT_EQ(r->status, 400) << r->body.substr(0, 300);
  const auto error = json::parse(r->body)["error"].get<std::string>();
  EXPECT_NE(error.find("values"), std::string::npos) << error;
  EXPECT_NE(error.find("784"), std::string::npos) << error;
  EXPECT_NE(error.find("--max-batch"), std::string::npos) << error;
  EXPECT_EQ(error.find("not valid JSON"), std::string::npos) << error;
  EXPECT_EQ(s.client().Post("/v2/models/fashion/infer", infer_body().dump(), "application/json")->status, 200);
}

}  // namespace
}  // namespace bulwark::testing
