// Backpressure against a real server on loopback: with the default flags a saturated model
// answers 503 at once (the queue can fill: it counts rows, below what the request threads can
// hold), a request carries at most --max-batch rows, and --max-queue counts rows, not requests.
#include <atomic>
#include <future>
#include <mutex>
#include <thread>

#include "fault_models.h"
#include "server_fixture.h"

namespace bulwark::testing {
namespace {

using nlohmann::json;
using std::chrono::milliseconds;

// Polls `pred` until it holds or `timeout` passes.
template <typename Pred>
bool within(milliseconds timeout, Pred pred) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (pred()) return true;
    std::this_thread::sleep_for(milliseconds(10));
  }
  return pred();
}

TEST(Backpressure, WithTheDefaultFlagsASaturatedModelAnswers503AtOnce) {
  TempDir dir;
  serve::CoreOptions o;  // default batching and queue
  o.access_log = "off";
  o.source.allow_unsigned = true;
  serve::InferenceCore core(o);
  core.load_model("gated", write_gated_model(dir, "gated.pt"));
  serve::HttpOptions h;  // default thread count
  h.port = 0;
  serve::HttpFrontend http(core, h);
  http.start();

  ClosedGate gate;  // the model hangs until the gate opens
  constexpr int kClients = 96;
  std::atomic<int> ok{0}, unavailable{0}, other{0};
  std::mutex mu;
  std::string unexpected;  // the last answer that was neither 200 nor a queue-full 503
  std::vector<std::thread> clients;
  for (int i = 0; i < kClients; ++i) {
    clients.emplace_back([&] {
      httplib::Client c("127.0.0.1", http.port());
      c.set_read_timeout(60, 0);
      const auto r = c.Post("/v2/models/gated/infer", infer_body().dump(), "application/json");
      if (r && r->status == 200)
        ++ok;
      else if (r && r->status == 503 && r->body.find("--max-queue") != std::string::npos)
        ++unavailable;
      else {
        ++other;
        std::lock_guard<std::mutex> lock(mu);
        unexpected = r ? std::to_string(r->status) + " " + r->body : "no answer: " + httplib::to_string(r.error());
      }
    });
  }
  // While the model is stuck, --max-queue rows (64 one-row requests) get in and every other
  // request is refused at once: that is what backpressure means.
  const bool refused = within(milliseconds(10000), [&] { return unavailable.load() == kClients - 64; });
  const auto metrics = core.render_metrics();
  gate.open();
  for (auto& t : clients) t.join();
  EXPECT_TRUE(refused) << unavailable.load() << " of " << kClients
                       << " requests refused while the model hung; expected all but 64";
  EXPECT_NE(metrics.find("\nbulwark_inflight_requests 64\n"), std::string::npos);
  EXPECT_EQ(other.load(), 0) << unexpected;
  EXPECT_EQ(ok.load() + unavailable.load(), kClients);
  EXPECT_GT(ok.load(), 0);
  http.stop();
}

TEST(Backpressure, MaxQueueCountsRowsNotRequests) {
  serve::CoreOptions o;
  o.batching.max_batch = 4;
  o.batching.max_queue = 8;  // rows
  o.batching.max_queue_delay_us = 0;
  TestServer s(o);
  s.core->load_model("gated", write_gated_model(s.dir, "gated.pt"));
  ClosedGate gate;
  auto post = [&s](int rows) {
    return std::async(std::launch::async, [&s, rows] {
      const auto r = s.client().Post("/v2/models/gated/infer", infer_body(rows).dump(), "application/json");
      return r ? std::make_pair(r->status, r->body) : std::make_pair(-1, std::string());
    });
  };
  auto running = post(4);  // in the (hung) forward pass
  ASSERT_TRUE(gate.wait_for_blocked(1, milliseconds(10000)));
  auto waiting = post(4);  // queued behind it: 8 rows admitted
  // Admitted to the queue, not only arrived (in flight but not yet queued, it would lose the race
  // to the ninth row and be the one refused).
  ASSERT_TRUE(within(milliseconds(10000), [&] {
    const auto m = s.client("").Get("/metrics");
    return m && m->body.find("bulwark_queue_rows{model=\"gated\",version=\"1\"} 8\n") != std::string::npos;
  }));
  auto refused = post(1);  // a ninth row
  const bool answered = refused.wait_for(std::chrono::seconds(5)) == std::future_status::ready;
  gate.open();
  ASSERT_TRUE(answered) << "the ninth row waited instead of being refused";
  const auto r = refused.get();
  EXPECT_EQ(r.first, 503) << r.second;
  EXPECT_NE(r.second.find("--max-queue"), std::string::npos) << r.second;
  EXPECT_EQ(running.get().first, 200);
  EXPECT_EQ(waiting.get().first, 200);
}

TEST(Backpressure, ARequestCarriesAtMostMaxBatchRows) {
  TestServer s;  // --max-batch 32
  const auto r = s.client().Post("/v2/models/fashion/infer", infer_body(33).dump(), "application/json");
  EXPECT_EQ(r->status, 400) << r->body.substr(0, 300);
  EXPECT_NE(r->body.find("33 rows"), std::string::npos) << r->body.substr(0, 300);
  EXPECT_NE(r->body.find("--max-batch"), std::string::npos) << r->body.substr(0, 300);
  EXPECT_EQ(s.client().Post("/v2/models/fashion/infer", infer_body(32).dump(), "application/json")->status, 200);
}

}  // namespace
}  // namespace bulwark::testing
