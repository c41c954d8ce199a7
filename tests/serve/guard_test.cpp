// The watch on the request path, against a real server on loopback: who sees attack scores,
// labelled feedback, per-client query-similarity blocking, calibrated detectors and the stream
// monitor's alarms.
#include <gtest/gtest.h>

#include <torch/torch.h>

#include <atomic>
#include <chrono>
#include <set>
#include <sstream>
#include <thread>

#include "core/digest.h"
#include "data/dataset.h"
#include "detect/calibration.h"
#include "detect/monitor_fit.h"
#include "model/model.h"
#include "server_fixture.h"

namespace bulwark::testing {
namespace {

using nlohmann::json;

json body_json(const httplib::Result& r) { return json::parse(r->body); }

json image_body(const torch::Tensor& x, const std::string& id) {
  const auto c = x.contiguous();
  return {{"id", id},
          {"inputs",
           {{{"name", "input"},
             {"shape", c.sizes().vec()},
             {"datatype", "FP32"},
             {"data", std::vector<float>(c.data_ptr<float>(), c.data_ptr<float>() + c.numel())}}}},
          {"outputs", {{{"name", "label"}}}}};
}

TEST(Guard, ScoresAreExposedOnlyAsConfigured) {
  for (const auto expose : {serve::ExposeScores::kOff, serve::ExposeScores::kAdmin, serve::ExposeScores::kAll}) {
    serve::CoreOptions o;
    o.guard.expose = expose;
    TestServer s(o);
    const auto body = infer_body().dump();
    const auto as_infer = body_json(s.client(kInferToken).Post("/v2/models/fashion/infer", body, "application/json"));
    const auto as_admin = body_json(s.client(kAdminToken).Post("/v2/models/fashion/infer", body, "application/json"));
    auto has_score = [](const json& j) { return j.contains("parameters") && j["parameters"].contains("attack_score"); };
    EXPECT_EQ(has_score(as_infer), expose == serve::ExposeScores::kAll);
    EXPECT_EQ(has_score(as_admin), expose != serve::ExposeScores::kOff);
  }
  // Without authentication nobody is admin: scores stay hidden by default.
  TestServer open({}, /*auth=*/false);
  const auto j = body_json(open.client("").Post("/v2/models/fashion/infer", infer_body().dump(), "application/json"));
  EXPECT_FALSE(j.contains("parameters") && j["parameters"].contains("attack_score"));
}

// The id feedback names: the server's, random, in parameters.feedback_id (the response's id
// echoes the request's own, as the V2 protocol says).
std::string feedback_id(const json& response) { return response["parameters"]["feedback_id"].get<std::string>(); }

TEST(Guard, FeedbackJoinsEarlierAnswers) {
  TestServer s;
  auto c = s.client(kInferToken);
  torch::manual_seed(5);
  const auto x = torch::rand({2, 1, 28, 28});
  const auto r = body_json(c.Post("/v2/models/fashion/infer", image_body(x, "fb-1").dump(), "application/json"));
  EXPECT_EQ(r["id"], "fb-1");
  const auto id1 = feedback_id(r);
  const auto predicted = r["outputs"][0]["data"].get<std::vector<std::string>>();
  ASSERT_EQ(predicted.size(), 2u);
  auto labeler = s.client(kFeedbackToken);
  auto post = [&](const json& j, httplib::Client& who) {
    return who.Post("/v2/models/fashion/feedback", j.dump(), "application/json");
  };
  // Row 0 labelled as predicted, row 1 as some other class.
  const std::string other = predicted[1] == "0" ? "1" : "0";
  const auto ok = post({{"id", id1}, {"labels", {predicted[0], other}}}, labeler);
  ASSERT_EQ(ok->status, 200) << ok->body;
  EXPECT_EQ(body_json(ok)["rows"], 2);
  EXPECT_EQ(body_json(ok)["correct"], 1);
  EXPECT_EQ(body_json(ok)["model_version"], "1");
  // Once per answer; unknown ids are 404 naming the id.
  const auto again = post({{"id", id1}, {"labels", {predicted[0], other}}}, labeler);
  EXPECT_EQ(again->status, 404);
  EXPECT_NE(again->body.find(id1.substr(0, 16)), std::string::npos) << again->body;
  const auto unknown = post({{"id", "never-sent"}, {"label", 3}}, labeler);
  EXPECT_EQ(unknown->status, 404);
  EXPECT_NE(unknown->body.find("never-sent"), std::string::npos);
  // Role feedback is required; infer tokens may not label.
  const auto fb2 = body_json(
      c.Post("/v2/models/fashion/infer", image_body(x.narrow(0, 0, 1), "fb-2").dump(), "application/json"));
  const auto id2 = feedback_id(fb2);
  const bool fb2_correct = fb2["outputs"][0]["data"][0] == "3";
  EXPECT_EQ(post({{"id", id2}, {"label", 3}}, c)->status, 403);
  // Bad bodies name the field.
  const auto bad_label = post({{"id", id2}, {"label", "banana"}}, labeler);
  EXPECT_EQ(bad_label->status, 400);
  EXPECT_NE(bad_label->body.find("labels[0]"), std::string::npos) << bad_label->body;
  const auto wrong_count = post({{"id", id2}, {"labels", {1, 2}}}, labeler);
  EXPECT_EQ(wrong_count->status, 400);
  EXPECT_NE(wrong_count->body.find("1 rows"), std::string::npos) << wrong_count->body;
  EXPECT_EQ(post({{"label", 3}}, labeler)->status, 400);
  EXPECT_EQ(labeler.Post("/v2/models/fashion/feedback", "{", "application/json")->status, 400);
  // The id is still answerable after the bad attempts.
  EXPECT_EQ(post({{"id", id2}, {"label", 3}}, labeler)->status, 200);
  const auto m = s.client(kAdminToken).Get("/metrics");
  const std::string correct_line =
      "bulwark_feedback_total{model=\"fashion\",result=\"correct\"} " + std::to_string(1 + fb2_correct);
  EXPECT_NE(m->body.find(correct_line), std::string::npos) << m->body;
}

// A client that re-uses an id, or names the one another client chose, reaches no one's record:
// feedback takes only the server's ids (128 random bits), and a second request never replaces
// the first's record (before, the last request with an id answered for it, so a client could
// overwrite a labeller's pending answers and make truthful labels score as wrong).
TEST(Guard, FeedbackIdsAreTheServersAndCannotBeReusedOrGuessed) {
  TestServer s;
  auto c = s.client(kInferToken);
  auto labeler = s.client(kFeedbackToken);
  torch::manual_seed(6);
  const auto two = body_json(c.Post("/v2/models/fashion/infer", image_body(torch::rand({2, 1, 28, 28}), "dup").dump(),
                                    "application/json"));
  const auto one = body_json(c.Post("/v2/models/fashion/infer", image_body(torch::rand({1, 1, 28, 28}), "dup").dump(),
                                    "application/json"));
  const auto a = feedback_id(two), b = feedback_id(one);
  EXPECT_NE(a, b);
  EXPECT_EQ(a.size(), 32u);  // 16 random bytes, hex
  EXPECT_EQ(a.find_first_not_of("0123456789abcdef"), std::string::npos) << a;
  auto post = [&](const std::string& id, const json& labels) {
    return labeler.Post("/v2/models/fashion/feedback", json{{"id", id}, {"labels", labels}}.dump(), "application/json");
  };
  EXPECT_EQ(post("dup", {1})->status, 404);  // the client's own id names nothing
  EXPECT_EQ(post("bw-1", {1})->status, 404);  // nor does a counter's
  const auto first = post(a, {1, 2});        // the 2-row answer is still the one `a` names
  EXPECT_EQ(first->status, 200) << first->body;
  EXPECT_EQ(body_json(first)["rows"], 2);
  EXPECT_EQ(post(b, {1})->status, 200);
}

// Labels count for the version that answered: after a swap, labels of the old version's answers
// go to its ledger, not the new version's (the watch reads the ledger).
TEST(Guard, LabelsCountForTheVersionThatAnswered) {
  TestServer s;
  auto c = s.client(kInferToken);
  auto labeler = s.client(kFeedbackToken);
  const auto old_answer = body_json(c.Post("/v2/models/fashion/infer", image_body(torch::rand({3, 1, 28, 28}), "o").dump(),
                                           "application/json"));
  EXPECT_EQ(old_answer["model_version"], "1");
  const auto model = write_model(s.dir, "mlp2.pt", "mlp", 7);
  EXPECT_EQ(s.core->load_model("fashion", model), "2");
  const auto new_answer = body_json(c.Post("/v2/models/fashion/infer", image_body(torch::rand({1, 1, 28, 28}), "n").dump(),
                                           "application/json"));
  EXPECT_EQ(new_answer["model_version"], "2");
  const auto r = labeler.Post("/v2/models/fashion/feedback",
                              json{{"id", feedback_id(old_answer)}, {"labels", {1, 2, 3}}}.dump(), "application/json");
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(body_json(r)["model_version"], "1");
  auto& g = s.core->guard();
  EXPECT_EQ(g.labelled("fashion", "1", 0, 1e12).labels, 3);
  EXPECT_EQ(g.labelled("fashion", "2", 0, 1e12).labels, 0);
  ASSERT_EQ(labeler.Post("/v2/models/fashion/feedback", json{{"id", feedback_id(new_answer)}, {"label", 4}}.dump(),
                         "application/json")->status, 200);
  const auto two = g.labelled("fashion", "2", 0, 1e12);
  EXPECT_EQ(two.labels, 1);
  EXPECT_EQ(two.labellers, 1);
  // By answer time: the old answers were given before the new one.
  const double t_new = serve::unix_now_s();
  EXPECT_EQ(g.labelled("fashion", "1", t_new, 1e12).labels, 0);
}

// Answers are remembered for feedback only while a token can post it: without tokens, or with no
// token holding the 'feedback' role, the table would fill with ids nobody can label (the soak's
// RSS growth). A token reload that grants the role turns it on; one that takes it away forgets.
TEST(Guard, AnswersAreRememberedOnlyWhileSomeoneCanLabelThem) {
  auto remembered = [](TestServer& s) { return s.core->guard_status()["guard"]["feedback"]["remembered"].get<int64_t>(); };
  auto infer = [](TestServer& s, const std::string& token, const std::string& id) {
    auto c = s.client(token);
    const auto r = c.Post("/v2/models/fashion/infer", image_body(torch::rand({1, 1, 28, 28}), id).dump(), "application/json");
    EXPECT_EQ(r->status, 200) << r->body;
    const auto j = body_json(r);
    return j.contains("parameters") && j["parameters"].contains("feedback_id") ? feedback_id(j) : std::string();
  };
  TestServer open({}, /*auth=*/false);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(infer(open, "", "open-" + std::to_string(i)), "");  // no id: nobody can label
  EXPECT_EQ(remembered(open), 0);

  TestServer s;  // the fixture's tokens include a labeler
  for (int i = 0; i < 5; ++i) infer(s, kInferToken, "id-" + std::to_string(i));
  EXPECT_EQ(remembered(s), 5);
  using serve::Role;
  s.core->set_tokens(serve::TokenStore::from_entries(
      {{"client", serve::sha256_hex(kInferToken), {Role::kInfer}, 0, 0}}));  // nobody may label now
  EXPECT_EQ(remembered(s), 0);
  EXPECT_EQ(infer(s, kInferToken, "id-5"), "");
  EXPECT_EQ(remembered(s), 0);
  s.core->set_tokens(fixture_tokens());
  const auto id6 = infer(s, kInferToken, "id-6");
  EXPECT_EQ(remembered(s), 1);
  auto labeler = s.client(kFeedbackToken);
  EXPECT_EQ(labeler.Post("/v2/models/fashion/feedback", json{{"id", id6}, {"label", 3}}.dump(), "application/json")->status, 200);
  EXPECT_EQ(labeler.Post("/v2/models/fashion/feedback", json{{"id", "id-5"}, {"label", 3}}.dump(), "application/json")->status, 404);
}

// A Square-like stream (each query a few pixels away from the last) from one token is blocked
// with a 403 naming the detector; another token, sending the same kind of image once, is not.
TEST(Guard, StatefulBlockStopsNearDuplicateStreamsPerClient) {
  serve::CoreOptions o;
  o.guard.stateful = "block";
  o.guard.stateful_options.hits_to_flag(3);
  TestServer s(o);
  auto attacker = s.client(kInferToken);
  torch::manual_seed(11);
  auto x = torch::rand({1, 1, 28, 28});
  int blocked_at = -1;
  std::string reason;
  for (int q = 0; q < 30 && blocked_at < 0; ++q) {
    const auto r = attacker.Post("/v2/models/fashion/infer", image_body(x, "q").dump(), "application/json");
    if (r->status == 403) {
      blocked_at = q;
      reason = r->body;
    } else {
      ASSERT_EQ(r->status, 200) << r->body;
    }
    // A 3x3 square of the image moves by +-0.1, as one Square iteration does.
    const int64_t i = q % 26, j = (q * 7) % 26;
    x.narrow(2, i, 3).narrow(3, j, 3).add_(q % 2 ? 0.1 : -0.1).clamp_(0, 1);
  }
  ASSERT_GE(blocked_at, 0) << "a near-duplicate stream was never blocked";
  EXPECT_LE(blocked_at, 6);
  EXPECT_NE(reason.find("blocked"), std::string::npos) << reason;
  const auto other = s.client(kAdminToken).Post("/v2/models/fashion/infer", image_body(x, "o").dump(), "application/json");
  EXPECT_EQ(other->status, 200) << "blocking is per client";
  const auto events = s.core->guard().events().recent(10);
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back().kind, "client.blocked");
  EXPECT_EQ(events.back().subject, "token:client");
}

// Every row of a request is checked before the model runs: a batch of 32 near-duplicates is
// refused whole (before, all 32 were answered and the block came after), and 32 concurrent
// near-duplicate requests are answered only up to the threshold.
torch::Tensor near_duplicates(int64_t n, uint64_t seed) {
  torch::manual_seed(seed);
  auto x = torch::rand({1, 1, 28, 28}).repeat({n, 1, 1, 1});
  for (int64_t q = 0; q < n; ++q) {  // a 3x3 square moved by +-0.1, as one Square iteration does
    x[q].narrow(1, q % 26, 3).narrow(2, (q * 7) % 26, 3).add_(q % 2 ? 0.1 : -0.1).clamp_(0, 1);
  }
  return x;
}

TEST(Guard, NearDuplicateRowsAndConcurrentRequestsStopAtTheThreshold) {
  serve::CoreOptions o;
  o.guard.stateful = "block";
  o.guard.stateful_options.hits_to_flag(3);
  o.batching.max_batch = 64;
  TestServer s(o);
  const auto batch = s.client(kInferToken).Post("/v2/models/fashion/infer", image_body(near_duplicates(32, 1), "b").dump(),
                                                "application/json");
  EXPECT_EQ(batch->status, 403) << batch->body;
  EXPECT_NE(batch->body.find("blocked"), std::string::npos) << batch->body;

  // Another client: 32 requests of one row each, all at once.
  const auto rows = near_duplicates(32, 2);
  std::vector<std::thread> threads;
  std::atomic<int> answered{0}, refused{0};
  std::atomic<bool> go{false};
  for (int i = 0; i < 32; ++i) {
    threads.emplace_back([&, i] {
      auto c = s.client(kAdminToken);
      const auto body = image_body(rows.narrow(0, i, 1), "c").dump();
      while (!go) std::this_thread::yield();
      const auto r = c.Post("/v2/models/fashion/infer", body, "application/json");
      (r && r->status == 200 ? answered : refused) += 1;
    });
  }
  go = true;
  for (auto& t : threads) t.join();
  // The first query is stored, the next hits_to_flag - 1 are hits, the hits_to_flag-th hit blocks.
  EXPECT_LE(answered.load(), 3);
  EXPECT_EQ(answered + refused, 32);
  EXPECT_TRUE(s.core->guard().status(serve::unix_now_s())["stateful"]["blocked_clients"].get<int64_t>() >= 2);
}

// Noise padding (U(-0.04, 0.04) on every value of every query) breaks the fingerprints' windows; the
// server passes each row's image layout to the detector, whose 14 x 14 cell view still sees the stream.
TEST(Guard, NoisePaddedNearDuplicatesAreBlockedThroughTheServer) {
  for (const double distance : {0.025, 0.0}) {
    serve::CoreOptions o;
    o.guard.stateful = "block";
    o.guard.stateful_options.hits_to_flag(3).distance(distance);
    TestServer s(o);
    auto rows = near_duplicates(10, 3);
    torch::manual_seed(4);
    rows = (rows + torch::empty_like(rows).uniform_(-0.04, 0.04)).clamp(0, 1);
    int blocked_at = -1;
    for (int64_t q = 0; q < 10 && blocked_at < 0; ++q) {
      const auto r = s.client(kInferToken).Post("/v2/models/fashion/infer", image_body(rows.narrow(0, q, 1), "n").dump(),
                                                "application/json");
      if (r->status == 403) blocked_at = static_cast<int>(q);
      else ASSERT_EQ(r->status, 200) << r->body;
    }
    if (distance > 0) {
      EXPECT_EQ(blocked_at, 3) << "stored, then three hits: the third blocks";
    } else {
      EXPECT_EQ(blocked_at, -1) << "the fingerprints alone miss the padded stream (why the cells exist)";
    }
  }
}

// Requests without a token count per network prefix: rotating addresses within a /24 (or a /64)
// is one client.
TEST(Guard, AnonymousClientsAreGroupedByNetworkPrefix) {
  EXPECT_EQ(serve::network_identity("198.51.100.7:5555", 24, 64), "net:198.51.100.0/24");
  EXPECT_EQ(serve::network_identity("198.51.100.250", 24, 64), "net:198.51.100.0/24");
  EXPECT_NE(serve::network_identity("198.51.101.7", 24, 64), "net:198.51.100.0/24");
  EXPECT_EQ(serve::network_identity("[2001:db8:1:2:aa::1]:443", 24, 64), "net:2001:db8:1:2::/64");
  EXPECT_EQ(serve::network_identity("2001:db8:1:2:ffff::9", 24, 64), "net:2001:db8:1:2::/64");
  EXPECT_EQ(serve::network_identity("10.1.2.3", 32, 128), "net:10.1.2.3/32");
  EXPECT_EQ(serve::network_identity("10.1.2.3", 16, 64), "net:10.1.0.0/16");
  EXPECT_EQ(serve::network_identity("unix-socket", 24, 64), "peer:unix-socket");
  serve::Metrics m;
  serve::GuardOptions go;
  serve::Guard g(go, m);
  EXPECT_EQ(g.identity("anonymous", "203.0.113.9:1"), g.identity("anonymous", "203.0.113.77:2"));
  EXPECT_EQ(g.identity("alice", "203.0.113.9:1"), "token:alice");
  go.prefix_v4 = 33;
  EXPECT_THROW(serve::Guard(go, m), Error);
}

// Anonymous /metrics carries no per-request detector or loop state: a scrape diff around a flagged
// request (flag threshold 0: every input is flagged) touches only the public request series.
TEST(Guard, AnonymousMetricsDoNotRevealAFlaggedRequest) {
  serve::CoreOptions o;
  o.guard.threshold = 0;
  o.guard.stateful = "flag";
  TestServer s(o);
  auto anon = s.client("");
  const auto before = anon.Get("/metrics");
  ASSERT_EQ(before->status, 200);
  const auto r = body_json(s.client(kAdminToken).Post("/v2/models/fashion/infer", infer_body().dump(), "application/json"));
  ASSERT_TRUE(r["parameters"]["attack_flagged"].get<bool>()) << r.dump();
  const auto after = anon.Get("/metrics");
  std::set<std::string> lines_before;
  std::istringstream in_before(before->body), in_after(after->body);
  for (std::string line; std::getline(in_before, line);) lines_before.insert(line);
  std::set<std::string> changed;
  for (std::string line; std::getline(in_after, line);) {
    if (line.empty() || line[0] == '#' || lines_before.count(line)) continue;
    changed.insert(line.substr(0, line.find_first_of("{ ")));
  }
  EXPECT_FALSE(changed.empty());  // the request itself is public: counts, durations, batch sizes
  const std::set<std::string> kPublic{"bulwark_inference_request_success_total", "bulwark_request_duration_seconds_bucket",
                                      "bulwark_request_duration_seconds_sum",    "bulwark_request_duration_seconds_count",
                                      "bulwark_queue_duration_seconds_bucket",   "bulwark_queue_duration_seconds_sum",
                                      "bulwark_queue_duration_seconds_count",    "bulwark_compute_duration_seconds_bucket",
                                      "bulwark_compute_duration_seconds_sum",    "bulwark_compute_duration_seconds_count",
                                      "bulwark_batch_size_bucket",               "bulwark_batch_size_sum",
                                      "bulwark_batch_size_count",                "bulwark_queue_rows",
                                      "bulwark_inflight_requests"};
  for (const auto& name : changed) EXPECT_TRUE(kPublic.count(name)) << name << " changed around a flagged request";
  for (const char* hidden : {"bulwark_attack_", "bulwark_stateful_", "bulwark_monitor_", "bulwark_guard_",
                             "bulwark_alarms_", "bulwark_feedback_"}) {
    EXPECT_EQ(after->body.find(hidden), std::string::npos) << hidden;
  }
  // A token with the metrics role sees them.
  using serve::Role;
  s.core->set_tokens(serve::TokenStore::from_entries({{"prom", serve::sha256_hex("prom-secret"), {Role::kMetrics}, 0, 0},
                                                      {"client", serve::sha256_hex(kInferToken), {Role::kInfer}, 0, 0}}));
  const auto full = s.client("prom-secret").Get("/metrics");
  ASSERT_EQ(full->status, 200);
  EXPECT_NE(full->body.find("bulwark_attack_flagged_total"), std::string::npos);
  EXPECT_EQ(s.client(kInferToken).Get("/metrics")->body.find("bulwark_attack_"), std::string::npos);
}

// The evidence a traffic alarm needs: identities whose answers were flagged often enough.
TEST(Guard, SuspiciousIdentitiesCountFlaggedClientsNotRequests) {
  serve::CoreOptions o;
  o.guard.threshold = 0;  // every input flagged
  TestServer s(o);
  const double t0 = serve::unix_now_s() - 1;
  for (int i = 0; i < 8; ++i) {
    ASSERT_EQ(s.client(kInferToken).Post("/v2/models/fashion/infer", infer_body().dump(), "application/json")->status, 200);
  }
  auto& g = s.core->guard();
  EXPECT_EQ(g.suspicious_identities("fashion", "detector_rate", t0, 0.15, 5), 1);  // many requests, one client
  EXPECT_EQ(g.suspicious_identities("fashion", "detector_rate", serve::unix_now_s() + 1, 0.15, 5), 0);  // none since
  for (int i = 0; i < 3; ++i) {
    ASSERT_EQ(s.client(kAdminToken).Post("/v2/models/fashion/infer", infer_body().dump(), "application/json")->status, 200);
  }
  EXPECT_EQ(g.suspicious_identities("fashion", "detector_rate", t0, 0.15, 5), 1);  // 3 flagged rows: not yet evidence
  for (int i = 0; i < 3; ++i) {
    ASSERT_EQ(s.client(kAdminToken).Post("/v2/models/fashion/infer", infer_body().dump(), "application/json")->status, 200);
  }
  EXPECT_EQ(g.suspicious_identities("fashion", "detector_rate", t0, 0.15, 5), 2);
  EXPECT_EQ(g.suspicious_identities("other", "detector_rate", t0, 0.15, 5), 0);
}

// A calibration for the served model: detectors and the monitor's reference, fitted on Fashion-MNIST.
std::string write_calibration(const TempDir& dir, const std::string& model_path, const std::string& name) {
  auto m = model::Model::load(model_path);
  m.set_training(false);
  const auto train = data::load_dataset("fashion-mnist", data::Split::kTrain).head(3000);
  const auto fit = train.select(torch::arange(0, 2000)), ref = train.select(torch::arange(2000, 3000));
  detect::CalibrationOptions co;
  co.detectors = {"max-softmax", "mahalanobis"};
  co.fpr = 0.01;
  auto set = detect::DetectorSet::calibrate(m, sha256_file_hex(model_path), co, fit.inputs(), fit.targets(), ref.inputs());
  set.monitor_reference() = detect::fit_monitor_reference(set, m, ref.inputs(), ref.targets());
  const auto path = dir.file(name);
  set.save(path);
  return path;
}

TEST(Guard, CalibratedDetectorsRaiseAMonitorAlarmOnShiftedTraffic) {
  TempDir cal_dir;
  TestServer plain;  // only for its model files
  const auto cal_a = write_calibration(cal_dir, plain.model_a, "a.detect");
  const auto cal_b = write_calibration(cal_dir, plain.model_b, "b.detect");
  serve::CoreOptions o;
  o.guard.calibration = {{"fashion", cal_a}};
  o.guard.expose = serve::ExposeScores::kAll;
  TestServer s(o);
  // s wrote its own copies of the same zoo models (same arch and seed: same bytes, same SHA-256).
  ASSERT_EQ(sha256_file_hex(s.model_a), sha256_file_hex(plain.model_a));
  std::vector<detect::Event> alarms;
  std::mutex mu;
  s.core->guard().events().subscribe([&](const detect::Event& e) {
    std::lock_guard<std::mutex> lock(mu);
    if (e.kind == "alarm") alarms.push_back(e);
  });
  auto c = s.client(kInferToken);
  // Clean traffic: Fashion-MNIST test images. No alarm.
  const auto test = data::load_dataset("fashion-mnist", data::Split::kTest).head(100);
  for (int i = 0; i < 100; ++i) {
    const auto r = c.Post("/v2/models/fashion/infer", image_body(test.inputs(torch::tensor({i})), "c").dump(), "application/json");
    ASSERT_EQ(r->status, 200);
  }
  {
    std::lock_guard<std::mutex> lock(mu);
    EXPECT_TRUE(alarms.empty()) << "alarm on clean traffic: " << alarms.front().to_json().dump();
  }
  // Shifted traffic: uniform noise, far from every class in feature space. An alarm must follow.
  torch::manual_seed(1);
  int flagged = 0;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  for (int i = 0; i < 200 && std::chrono::steady_clock::now() < deadline; ++i) {
    const auto r = body_json(c.Post("/v2/models/fashion/infer", image_body(torch::rand({1, 1, 28, 28}), "n").dump(),
                                    "application/json"));
    flagged += r["parameters"]["attack_flagged"].get<bool>();
    std::lock_guard<std::mutex> lock(mu);
    if (!alarms.empty()) break;
  }
  EXPECT_GT(flagged, 0);
  std::lock_guard<std::mutex> lock(mu);
  ASSERT_FALSE(alarms.empty()) << "no alarm after " << flagged << " flagged inputs";
  EXPECT_EQ(alarms.front().detector, "detector_rate");
  EXPECT_EQ(alarms.front().model, "fashion");
  const auto metrics = s.client(kAdminToken).Get("/metrics")->body;
  EXPECT_NE(metrics.find("bulwark_alarms_total{model=\"fashion\",detector=\"detector_rate\"}"), std::string::npos);
  EXPECT_NE(metrics.find("bulwark_monitor_cusum{model=\"fashion\",detector=\"detector_rate\"}"), std::string::npos);
  // A calibration made for another model is refused and the old model keeps serving.
  serve::CoreOptions wrong;
  wrong.guard.calibration = {{"fashion", cal_b}};
  try {
    TestServer bad(wrong);
    FAIL() << "a calibration for model b was accepted for model a";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("another model"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace bulwark::testing
