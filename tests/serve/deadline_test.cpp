// Deadlines against a real server on loopback: a model that hangs answers 504 /
// DEADLINE_EXCEEDED after --request-timeout-ms instead of holding the request thread forever,
// requests whose deadline passes while queued never run, and shutting down with the model still
// stuck ends within --drain-timeout-ms.
#include <grpcpp/grpcpp.h>

#include <atomic>
#include <future>

#include "fault_models.h"
#include "grpc_predict_v2.grpc.pb.h"
#include "grpc_request.h"
#include "serve/batcher.h"
#include "serve/status.h"
#include "server_fixture.h"

namespace bulwark::testing {
namespace {

using nlohmann::json;
using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

TEST(Deadlines, AHungModelAnswers504AndShutdownStillEnds) {
  TempDir dir;
  serve::CoreOptions o;
  o.access_log = "off";
  o.source.allow_unsigned = true;
  o.request_timeout_ms = 300;
  o.batching.drain_timeout_ms = 300;
  auto core = std::make_unique<serve::InferenceCore>(o);
  core->load_model("gated", write_gated_model(dir, "gated.pt"));
  serve::HttpOptions h;
  h.port = 0;
  auto http = std::make_unique<serve::HttpFrontend>(*core, h);
  http->start();
  serve::GrpcOptions g;
  g.port = 0;
  auto grpc_frontend = std::make_unique<serve::GrpcFrontend>(*core, g);

  ClosedGate gate;
  httplib::Client c("127.0.0.1", http->port());
  c.set_read_timeout(30, 0);
  auto t0 = Clock::now();
  const auto r = c.Post("/v2/models/gated/infer", infer_body().dump(), "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 504) << r->body;
  EXPECT_NE(r->body.find("--request-timeout-ms"), std::string::npos) << r->body;
  EXPECT_GE(seconds_since(t0), 0.29);
  EXPECT_LT(seconds_since(t0), 10.0);

  auto stub = inference::GRPCInferenceService::NewStub(
      grpc::CreateChannel("127.0.0.1:" + std::to_string(grpc_frontend->port()), grpc::InsecureChannelCredentials()));
  auto q = one_image_request("gated");
  grpc::ClientContext ctx;
  inference::ModelInferResponse resp;
  const auto st = stub->ModelInfer(&ctx, q, &resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED) << st.error_message();

  const auto m = c.Get("/metrics");
  EXPECT_NE(m->body.find("reason=\"deadline_exceeded\"} 2"), std::string::npos) << m->body;

  // Drain with the forward pass still stuck: everything stops, within the drain deadline plus
  // the HTTP library's idle keep-alive wait.
  t0 = Clock::now();
  core->begin_drain();
  http->stop();
  grpc_frontend->stop();
  http.reset();
  grpc_frontend.reset();
  core.reset();
  EXPECT_LT(seconds_since(t0), 10.0);
  EXPECT_TRUE(gate.wait_for_blocked(1, milliseconds(0))) << "the model was still stuck";
  gate.open();  // the thread left behind finishes now
  EXPECT_TRUE(gate.wait_for_none_blocked(milliseconds(10000)));
}

TEST(Deadlines, ARequestWhoseDeadlinePassedInTheQueueNeverRuns) {
  std::promise<void> started, release;
  auto release_f = release.get_future().share();
  std::atomic<int> runs{0};
  serve::DynamicBatcher b({1, 0, 4}, [&](const at::Tensor& x) {
    if (runs++ == 0) {
      started.set_value();
      release_f.wait();
    }
    return std::make_pair(x.reshape({x.size(0), -1}), at::Tensor());
  });
  auto running = b.submit(torch::ones({1, 1}));
  started.get_future().wait();
  auto late = b.submit(torch::ones({1, 1}), Clock::now());  // its caller has already given up
  auto timely = b.submit(torch::ones({1, 1}));
  release.set_value();
  EXPECT_NO_THROW(running.get());
  EXPECT_NO_THROW(timely.get());
  try {
    late.get();
    ADD_FAILURE() << "a request past its deadline ran";
  } catch (const serve::DeadlineExceededError& e) {
    EXPECT_NE(std::string(e.what()).find("--request-timeout-ms"), std::string::npos) << e.what();
  }
  EXPECT_EQ(runs.load(), 2);  // the late one was dropped, not computed
}

TEST(Deadlines, OptionsNameTheFlag) {
  serve::CoreOptions o;
  o.request_timeout_ms = 0;
  try {
    o.validate();
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--request-timeout-ms"), std::string::npos) << e.what();
  }
  serve::BatcherOptions b;
  b.drain_timeout_ms = -1;
  EXPECT_THROW(b.validate(), Error);
}

}  // namespace
}  // namespace bulwark::testing
