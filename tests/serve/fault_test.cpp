// Models that fail, against a real server on loopback: a model whose output does not match its
// spec fails its batch (never the process), and a failure inside LibTorch reaches the server's
// log, not the client.
#include <grpcpp/grpcpp.h>

#include <fstream>
#include <future>

#include "fault_models.h"
#include "grpc_predict_v2.grpc.pb.h"
#include "grpc_request.h"
#include "server_fixture.h"

namespace bulwark::testing {
namespace {

using nlohmann::json;

TEST(Faults, AModelReturningTooFewRowsFailsItsBatchAndTheServerLives) {
  serve::CoreOptions o;
  // Two one-row requests make one batch: the first waits (up to 5 s) for the second.
  o.batching.max_batch = 2;
  o.batching.max_queue_delay_us = 5'000'000;
  TestServer s(o);
  s.core->load_model("short", write_short_model(s.dir, "short.pt"));
  auto post = [&s] {
    return std::async(std::launch::async, [&s] {
      const auto r = s.client().Post("/v2/models/short/infer", infer_body().dump(), "application/json");
      return r ? std::make_pair(r->status, r->body) : std::make_pair(-1, std::string());
    });
  };
  auto a = post(), b = post();
  const auto ra = a.get(), rb = b.get();
  EXPECT_EQ(ra.first, 500) << ra.second;
  EXPECT_EQ(rb.first, 500) << rb.second;
  // The server is still there, and still serves the healthy model (a full batch of 2 rows).
  EXPECT_EQ(s.client().Post("/v2/models/fashion/infer", infer_body(2).dump(), "application/json")->status, 200);
  // The reason is in the access log, not in the answer.
  std::ifstream in(s.dir.file("access.jsonl"));
  std::string line, all;
  while (std::getline(in, line)) all += line + "\n";
  EXPECT_NE(all.find("rows"), std::string::npos) << all;
}

TEST(Faults, AModelWhoseOutputDoesNotMatchItsSpecIsRefusedAtLoad) {
  TestServer s;
  try {
    s.core->load_model("narrow", write_narrow_model(s.dir, "narrow.pt"));
    ADD_FAILURE() << "a model answering 5 logits per row for a 10-class spec was loaded";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("[1, 5]"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("10"), std::string::npos) << e.what();
  }
  EXPECT_EQ(s.client().Post("/v2/models/narrow/infer", infer_body().dump(), "application/json")->status, 404);
  EXPECT_EQ(s.client().Post("/v2/models/fashion/infer", infer_body().dump(), "application/json")->status, 200);
}

TEST(Faults, ALibTorchFailureReachesTheLogNotTheClient) {
  TestServer s;
  s.core->load_model("leaky", write_leaky_model(s.dir, "leaky.pt"));
  const auto r = s.client().Post("/v2/models/leaky/infer", infer_body(1, 0.5f).dump(), "application/json");
  ASSERT_EQ(r->status, 500) << r->body;
  const auto error = json::parse(r->body)["error"].get<std::string>();
  for (const std::string secret : {"mat1", "Traceback", "TorchScript", "leaky_internal", "torch.mm", ".py"}) {
    EXPECT_EQ(error.find(secret), std::string::npos) << "leaked '" << secret << "': " << error;
  }
  EXPECT_NE(error.find("req-1"), std::string::npos) << "the answer names the request id to quote: " << error;
  // The detail stays on the server, under that request id.
  std::ifstream in(s.dir.file("access.jsonl"));
  std::string line;
  bool logged = false;
  while (std::getline(in, line)) {
    const auto j = json::parse(line);
    if (j["request_id"] == "req-1" && j["status"] == 500)
      logged = j["error"].get<std::string>().find("mat1") != std::string::npos;
  }
  EXPECT_TRUE(logged) << "the access log keeps the detail";

  auto stub = inference::GRPCInferenceService::NewStub(
      grpc::CreateChannel(s.grpc_address(), grpc::InsecureChannelCredentials()));
  auto q = one_image_request("leaky");
  q.set_id("g-leak");
  grpc::ClientContext ctx;
  ctx.AddMetadata("authorization", std::string("Bearer ") + kInferToken);
  inference::ModelInferResponse resp;
  const auto st = stub->ModelInfer(&ctx, q, &resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INTERNAL);
  EXPECT_EQ(st.error_message().find("mat1"), std::string::npos) << st.error_message();
  EXPECT_EQ(st.error_message().find("Traceback"), std::string::npos) << st.error_message();
  EXPECT_NE(st.error_message().find("g-leak"), std::string::npos) << st.error_message();
}

}  // namespace
}  // namespace bulwark::testing
