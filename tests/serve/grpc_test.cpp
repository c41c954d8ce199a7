// The V2 gRPC frontend against a real server on loopback, through a stub generated from the
// project's grpc_predict_v2.proto.
#include <grpcpp/grpcpp.h>

#include <cstring>

#include <torch/torch.h>

#include "grpc_predict_v2.grpc.pb.h"
#include "server_fixture.h"

namespace bulwark::testing {
namespace {

std::unique_ptr<inference::GRPCInferenceService::Stub> stub_for(const TestServer& s) {
  return inference::GRPCInferenceService::NewStub(
      grpc::CreateChannel(s.grpc_address(), grpc::InsecureChannelCredentials()));
}

void with_token(grpc::ClientContext* ctx, const std::string& token) {
  if (!token.empty()) ctx->AddMetadata("authorization", "Bearer " + token);
}

inference::ModelInferRequest infer_request(const torch::Tensor& x, bool raw) {
  inference::ModelInferRequest q;
  q.set_model_name("fashion");
  q.set_id("g-1");
  auto* in = q.add_inputs();
  in->set_name("input");
  in->set_datatype("FP32");
  for (auto d : x.sizes()) in->add_shape(d);
  const auto c = x.contiguous();
  if (raw) {
    q.add_raw_input_contents(std::string(reinterpret_cast<const char*>(c.data_ptr<float>()), c.numel() * 4));
  } else {
    in->mutable_contents()->mutable_fp32_contents()->Add(c.data_ptr<float>(), c.data_ptr<float>() + c.numel());
  }
  return q;
}

TEST(Grpc, HealthAndMetadata) {
  TestServer s;
  auto stub = stub_for(s);
  {
    grpc::ClientContext ctx;
    inference::ServerLiveResponse r;
    ASSERT_TRUE(stub->ServerLive(&ctx, {}, &r).ok());
    EXPECT_TRUE(r.live());
  }
  {
    grpc::ClientContext ctx;
    inference::ServerReadyResponse r;
    ASSERT_TRUE(stub->ServerReady(&ctx, {}, &r).ok());
    EXPECT_TRUE(r.ready());
  }
  {
    grpc::ClientContext ctx;
    inference::ServerMetadataResponse r;
    ASSERT_TRUE(stub->ServerMetadata(&ctx, {}, &r).ok());
    EXPECT_EQ(r.name(), "bulwark");
  }
  {
    grpc::ClientContext ctx;
    with_token(&ctx, kInferToken);
    inference::ModelMetadataRequest q;
    q.set_name("fashion");
    inference::ModelMetadataResponse r;
    ASSERT_TRUE(stub->ModelMetadata(&ctx, q, &r).ok());
    EXPECT_EQ(r.inputs(0).name(), "input");
    ASSERT_EQ(r.inputs(0).shape_size(), 4);
    EXPECT_EQ(r.inputs(0).shape(0), -1);
    EXPECT_EQ(r.versions(0), "1");
  }
  {
    grpc::ClientContext ctx;
    with_token(&ctx, kInferToken);
    inference::ModelReadyRequest q;
    q.set_name("nope");
    inference::ModelReadyResponse r;
    ASSERT_TRUE(stub->ModelReady(&ctx, q, &r).ok());
    EXPECT_FALSE(r.ready());
  }
  {
    grpc::ClientContext ctx;
    with_token(&ctx, kInferToken);
    inference::ModelMetadataRequest q;
    q.set_name("nope");
    inference::ModelMetadataResponse r;
    EXPECT_EQ(stub->ModelMetadata(&ctx, q, &r).error_code(), grpc::StatusCode::NOT_FOUND);
  }
}

TEST(Grpc, InferTypedAndRawAgreeWithTheModel) {
  TestServer s;
  auto stub = stub_for(s);
  torch::manual_seed(9);
  const auto x = torch::rand({2, 1, 28, 28});
  torch::Tensor expected;
  {
    torch::NoGradGuard ng;
    expected = model::Model::load(s.model_a).logits(x);
  }
  for (const bool raw : {false, true}) {
    grpc::ClientContext ctx;
    // Admin: attack scores are exposed to admin tokens only (default --expose-scores admin).
    with_token(&ctx, raw ? kAdminToken : kInferToken);
    inference::ModelInferResponse r;
    const auto status = stub->ModelInfer(&ctx, infer_request(x, raw), &r);
    ASSERT_TRUE(status.ok()) << status.error_message();
    EXPECT_EQ(r.id(), "g-1");
    EXPECT_EQ(r.model_version(), "1");
    ASSERT_EQ(r.outputs_size(), 3);  // none named: every output, as the protocol says
    EXPECT_EQ(r.outputs(0).name(), "logits");
    std::vector<float> got(20);
    if (raw) {
      ASSERT_EQ(r.raw_output_contents_size(), 3);
      ASSERT_EQ(r.raw_output_contents(0).size(), 80u);
      std::memcpy(got.data(), r.raw_output_contents(0).data(), 80);
    } else {
      ASSERT_EQ(r.outputs(0).contents().fp32_contents_size(), 20);
      std::copy(r.outputs(0).contents().fp32_contents().begin(), r.outputs(0).contents().fp32_contents().end(),
                got.begin());
    }
    EXPECT_TRUE(torch::allclose(torch::tensor(got).view({2, 10}), expected, 1e-4, 1e-5));
    if (!raw) {
      EXPECT_FALSE(r.parameters().count("attack_score")) << "scores are a free signal: hidden from role infer";
      continue;
    }
    ASSERT_TRUE(r.parameters().count("attack_flagged"));
    EXPECT_TRUE(r.parameters().at("attack_scorer").string_param() == "max-softmax");
  }
}

TEST(Grpc, ErrorsMapToCanonicalCodes) {
  TestServer s;
  auto stub = stub_for(s);
  const auto x = torch::rand({1, 1, 28, 28});
  auto call = [&](const std::string& token, inference::ModelInferRequest q) {
    grpc::ClientContext ctx;
    with_token(&ctx, token);
    inference::ModelInferResponse r;
    return stub->ModelInfer(&ctx, q, &r);
  };
  EXPECT_EQ(call("", infer_request(x, true)).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(call(kFeedbackToken, infer_request(x, true)).error_code(), grpc::StatusCode::PERMISSION_DENIED);
  auto missing = infer_request(x, true);
  missing.set_model_name("nope");
  EXPECT_EQ(call(kInferToken, missing).error_code(), grpc::StatusCode::NOT_FOUND);
  auto short_raw = infer_request(x, true);
  short_raw.mutable_raw_input_contents(0)->resize(100);
  const auto st = call(kInferToken, short_raw);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(st.error_message().find("raw_input_contents holds 100 bytes"), std::string::npos) << st.error_message();
  auto negative = infer_request(x, false);
  negative.mutable_inputs(0)->set_shape(0, -3);
  EXPECT_EQ(call(kInferToken, negative).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  auto out_of_range = infer_request(x * 3.0, false);
  const auto st2 = call(kInferToken, out_of_range);
  EXPECT_EQ(st2.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(st2.error_message().find("outside the model's range"), std::string::npos);
  // Still serving.
  EXPECT_TRUE(call(kInferToken, infer_request(x, true)).ok());
  // Over the rate: RESOURCE_EXHAUSTED.
  int exhausted = 0;
  for (int i = 0; i < 4; ++i) exhausted += call(kSlowToken, infer_request(x, true)).error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED;
  EXPECT_EQ(exhausted, 2);
}

}  // namespace
}  // namespace bulwark::testing
