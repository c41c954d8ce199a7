// What KServe clients expect, against a real server on loopback: health endpoints answer JSON
// (the Python client calls .json() on them) and a request that names no outputs gets every
// output the model has, as the protocol says.
#include <grpcpp/grpcpp.h>

#include "grpc_predict_v2.grpc.pb.h"
#include "grpc_request.h"
#include "server_fixture.h"

namespace bulwark::testing {
namespace {

using nlohmann::json;

json json_of(const httplib::Result& r) { return json::parse(r->body); }

TEST(Protocol, HealthEndpointsAnswerJson) {
  TestServer s;
  auto anon = s.client("");
  const auto live = anon.Get("/v2/health/live");
  ASSERT_EQ(live->status, 200);
  EXPECT_EQ(json_of(live), json({{"live", true}}));
  EXPECT_EQ(live->get_header_value("Content-Type"), "application/json");
  const auto ready = anon.Get("/v2/health/ready");
  ASSERT_EQ(ready->status, 200);
  EXPECT_EQ(json_of(ready), json({{"ready", true}}));
  const auto model = s.client().Get("/v2/models/fashion/ready");
  ASSERT_EQ(model->status, 200);
  EXPECT_EQ(json_of(model), json({{"name", "fashion"}, {"ready", true}}));
  const auto missing = s.client().Get("/v2/models/nope/ready");
  EXPECT_EQ(missing->status, 400);  // 4xx = false, with the same body shape
  EXPECT_EQ(json_of(missing), json({{"name", "nope"}, {"ready", false}}));
  s.core->begin_drain();
  const auto draining = anon.Get("/v2/health/ready");
  EXPECT_EQ(draining->status, 400);
  EXPECT_EQ(json_of(draining), json({{"ready", false}}));
  EXPECT_EQ(json_of(anon.Get("/v2/health/live")), json({{"live", true}}));
}

TEST(Protocol, ARequestNamingNoOutputsGetsEveryOutput) {
  TestServer s;
  auto body = infer_body(2);
  ASSERT_FALSE(body.contains("outputs"));
  const auto r = s.client().Post("/v2/models/fashion/infer", body.dump(), "application/json");
  ASSERT_EQ(r->status, 200) << r->body;
  const auto outputs = json_of(r)["outputs"];
  ASSERT_EQ(outputs.size(), 3u) << outputs.dump();
  EXPECT_EQ(outputs[0]["name"], "logits");
  EXPECT_EQ(outputs[1]["name"], "probabilities");
  EXPECT_EQ(outputs[2]["name"], "label");
  EXPECT_EQ(outputs[2]["shape"], json::array({2}));

  auto stub = inference::GRPCInferenceService::NewStub(
      grpc::CreateChannel(s.grpc_address(), grpc::InsecureChannelCredentials()));
  auto q = one_image_request("fashion");
  grpc::ClientContext ctx;
  ctx.AddMetadata("authorization", std::string("Bearer ") + kInferToken);
  inference::ModelInferResponse resp;
  const auto st = stub->ModelInfer(&ctx, q, &resp);
  ASSERT_TRUE(st.ok()) << st.error_message();
  ASSERT_EQ(resp.outputs_size(), 3);
  EXPECT_EQ(resp.outputs(0).name(), "logits");
  EXPECT_EQ(resp.outputs(1).name(), "probabilities");
  EXPECT_EQ(resp.outputs(2).name(), "label");
  EXPECT_EQ(resp.outputs(2).contents().bytes_contents_size(), 1);
}

}  // namespace
}  // namespace bulwark::testing
