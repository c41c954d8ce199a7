// The gRPC surface KServe and Triton clients and the usual tools expect, against a real server on
// loopback: the model-repository RPCs (admin token, as over REST), the standard health service
// (grpc.health.v1, what Kubernetes gRPC probes call) and server reflection (grpcurl without -proto).
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>

#include "grpc_predict_v2.grpc.pb.h"
#include "health.grpc.pb.h"
#include "server_fixture.h"

namespace bulwark::testing {
namespace {

using std::chrono::seconds;

std::shared_ptr<grpc::Channel> channel_to(const TestServer& s) {
  return grpc::CreateChannel(s.grpc_address(), grpc::InsecureChannelCredentials());
}

void with_token(grpc::ClientContext* ctx, const std::string& token) {
  if (!token.empty()) ctx->AddMetadata("authorization", "Bearer " + token);
  ctx->set_deadline(std::chrono::system_clock::now() + seconds(30));
}

TEST(GrpcProtocol, RepositoryRpcsNeedAnAdminTokenAndWork) {
  TestServer s;
  auto stub = inference::GRPCInferenceService::NewStub(channel_to(s));
  auto index = [&](const std::string& token, inference::RepositoryIndexResponse* r) {
    grpc::ClientContext ctx;
    with_token(&ctx, token);
    return stub->RepositoryIndex(&ctx, {}, r);
  };
  inference::RepositoryIndexResponse idx;
  EXPECT_EQ(index("", &idx).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(index(kInferToken, &idx).error_code(), grpc::StatusCode::PERMISSION_DENIED);
  ASSERT_TRUE(index(kAdminToken, &idx).ok());
  ASSERT_EQ(idx.models_size(), 1);
  EXPECT_EQ(idx.models(0).name(), "fashion");
  EXPECT_EQ(idx.models(0).version(), "1");
  EXPECT_EQ(idx.models(0).state(), "READY");

  {  // Load (KServe's message names the model only): reloads it from its source, a new version.
    grpc::ClientContext ctx;
    with_token(&ctx, kAdminToken);
    inference::RepositoryModelLoadRequest q;
    q.set_model_name("fashion");
    inference::RepositoryModelLoadResponse r;
    const auto st = stub->RepositoryModelLoad(&ctx, q, &r);
    ASSERT_TRUE(st.ok()) << st.error_message();
    EXPECT_EQ(r.model_name(), "fashion");
    EXPECT_TRUE(r.isloaded());
  }
  {
    grpc::ClientContext ctx;
    with_token(&ctx, kInferToken);
    inference::RepositoryModelLoadRequest q;
    q.set_model_name("fashion");
    inference::RepositoryModelLoadResponse r;
    EXPECT_EQ(stub->RepositoryModelLoad(&ctx, q, &r).error_code(), grpc::StatusCode::PERMISSION_DENIED);
  }
  {
    grpc::ClientContext ctx;
    with_token(&ctx, kAdminToken);
    inference::RepositoryModelUnloadRequest q;
    q.set_model_name("fashion");
    inference::RepositoryModelUnloadResponse r;
    const auto st = stub->RepositoryModelUnload(&ctx, q, &r);
    ASSERT_TRUE(st.ok()) << st.error_message();
    EXPECT_TRUE(r.isunloaded());
  }
  idx.Clear();
  ASSERT_TRUE(index(kAdminToken, &idx).ok());
  ASSERT_EQ(idx.models_size(), 1);
  EXPECT_EQ(idx.models(0).state(), "UNAVAILABLE");
  EXPECT_EQ(idx.models(0).version(), "2");
  {
    grpc::ClientContext ctx;
    with_token(&ctx, kAdminToken);
    inference::RepositoryIndexRequest q;
    q.set_ready(true);
    inference::RepositoryIndexResponse r;
    ASSERT_TRUE(stub->RepositoryIndex(&ctx, q, &r).ok());
    EXPECT_EQ(r.models_size(), 0) << "ready=true lists ready models only";
  }
  {
    grpc::ClientContext ctx;
    with_token(&ctx, kAdminToken);
    inference::RepositoryModelUnloadRequest q;
    q.set_model_name("fashion");
    inference::RepositoryModelUnloadResponse r;
    EXPECT_EQ(stub->RepositoryModelUnload(&ctx, q, &r).error_code(), grpc::StatusCode::NOT_FOUND);
  }
  // Without tokens nobody is admin over gRPC either.
  TestServer open({}, /*auth=*/false);
  auto open_stub = inference::GRPCInferenceService::NewStub(channel_to(open));
  grpc::ClientContext ctx;
  with_token(&ctx, "");
  inference::RepositoryIndexResponse r;
  EXPECT_EQ(open_stub->RepositoryIndex(&ctx, {}, &r).error_code(), grpc::StatusCode::PERMISSION_DENIED);
}

TEST(GrpcProtocol, HealthServiceFollowsReadiness) {
  TestServer s;
  auto health = grpc::health::v1::Health::NewStub(channel_to(s));
  auto check = [&](const std::string& service, grpc::health::v1::HealthCheckResponse* r) {
    grpc::ClientContext ctx;
    with_token(&ctx, "");  // open, like the REST health endpoints
    grpc::health::v1::HealthCheckRequest q;
    q.set_service(service);
    return health->Check(&ctx, q, r);
  };
  grpc::health::v1::HealthCheckResponse r;
  ASSERT_TRUE(check("", &r).ok());
  EXPECT_EQ(r.status(), grpc::health::v1::HealthCheckResponse::SERVING);
  ASSERT_TRUE(check("inference.GRPCInferenceService", &r).ok());
  EXPECT_EQ(r.status(), grpc::health::v1::HealthCheckResponse::SERVING);
  EXPECT_EQ(check("no.such.Service", &r).error_code(), grpc::StatusCode::NOT_FOUND);
  s.core->begin_drain();
  ASSERT_TRUE(check("", &r).ok());
  EXPECT_EQ(r.status(), grpc::health::v1::HealthCheckResponse::NOT_SERVING);
}

// One call of the reflection service's bidirectional stream with the generic stub: the request
// ServerReflectionRequest{list_services: ""} is field 7, length 0.
std::string list_services_by_reflection(const std::shared_ptr<grpc::Channel>& channel) {
  grpc::GenericStub stub(channel);
  grpc::CompletionQueue cq;
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + seconds(30));
  auto call = stub.PrepareCall(&ctx, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", &cq);
  auto step = [&cq](void* tag) {
    void* got = nullptr;
    bool ok = false;
    return cq.Next(&got, &ok) && got == tag && ok;
  };
  int tags[5];
  call->StartCall(&tags[0]);
  if (!step(&tags[0])) return "start failed";
  const std::string request("\x3a\x00", 2);
  grpc::Slice slice(request);
  grpc::ByteBuffer out(&slice, 1);
  call->Write(out, &tags[1]);
  if (!step(&tags[1])) return "write failed";
  grpc::ByteBuffer in;
  call->Read(&in, &tags[2]);
  const bool read = step(&tags[2]);
  call->WritesDone(&tags[3]);
  step(&tags[3]);
  grpc::Status status;
  call->Finish(&status, &tags[4]);
  step(&tags[4]);
  if (!read) return "read failed: " + status.error_message();
  std::vector<grpc::Slice> slices;
  if (!in.Dump(&slices).ok()) return "dump failed";
  std::string bytes;
  for (const auto& s : slices) bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  return bytes;
}

TEST(GrpcProtocol, ServerReflectionListsTheServices) {
  TestServer s;
  const auto answer = list_services_by_reflection(channel_to(s));
  EXPECT_NE(answer.find("inference.GRPCInferenceService"), std::string::npos) << answer;
  EXPECT_NE(answer.find("grpc.health.v1.Health"), std::string::npos) << answer;
}

}  // namespace
}  // namespace bulwark::testing
