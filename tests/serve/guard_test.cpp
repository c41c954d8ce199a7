// The watch on the request path, against a real server on loopback: who sees attack scores,
// labelled feedback, per-client query-similarity blocking, calibrated detectors and the stream
// monitor's alarms.
#include <gtest/gtest.h>

#include <torch/torch.h>

#include <chrono>
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

TEST(Guard, FeedbackJoinsEarlierAnswers) {
  TestServer s;
  auto c = s.client(kInferToken);
  torch::manual_seed(5);
  const auto x = torch::rand({2, 1, 28, 28});
  const auto r = body_json(c.Post("/v2/models/fashion/infer", image_body(x, "fb-1").dump(), "application/json"));
  const auto predicted = r["outputs"][0]["data"].get<std::vector<std::string>>();
  ASSERT_EQ(predicted.size(), 2u);
  auto labeler = s.client(kFeedbackToken);
  auto post = [&](const json& j, httplib::Client& who) {
    return who.Post("/v2/models/fashion/feedback", j.dump(), "application/json");
  };
  // Row 0 labelled as predicted, row 1 as some other class.
  const std::string other = predicted[1] == "0" ? "1" : "0";
  const auto ok = post({{"id", "fb-1"}, {"labels", {predicted[0], other}}}, labeler);
  ASSERT_EQ(ok->status, 200) << ok->body;
  EXPECT_EQ(body_json(ok)["rows"], 2);
  EXPECT_EQ(body_json(ok)["correct"], 1);
  // Once per answer; unknown ids are 404 naming the id.
  const auto again = post({{"id", "fb-1"}, {"labels", {predicted[0], other}}}, labeler);
  EXPECT_EQ(again->status, 404);
  EXPECT_NE(again->body.find("fb-1"), std::string::npos) << again->body;
  const auto unknown = post({{"id", "never-sent"}, {"label", 3}}, labeler);
  EXPECT_EQ(unknown->status, 404);
  EXPECT_NE(unknown->body.find("never-sent"), std::string::npos);
  // Role feedback is required; infer tokens may not label.
  const auto fb2 = body_json(
      c.Post("/v2/models/fashion/infer", image_body(x.narrow(0, 0, 1), "fb-2").dump(), "application/json"));
  const bool fb2_correct = fb2["outputs"][0]["data"][0] == "3";
  EXPECT_EQ(post({{"id", "fb-2"}, {"label", 3}}, c)->status, 403);
  // Bad bodies name the field.
  const auto bad_label = post({{"id", "fb-2"}, {"label", "banana"}}, labeler);
  EXPECT_EQ(bad_label->status, 400);
  EXPECT_NE(bad_label->body.find("labels[0]"), std::string::npos) << bad_label->body;
  const auto wrong_count = post({{"id", "fb-2"}, {"labels", {1, 2}}}, labeler);
  EXPECT_EQ(wrong_count->status, 400);
  EXPECT_NE(wrong_count->body.find("1 rows"), std::string::npos) << wrong_count->body;
  EXPECT_EQ(post({{"label", 3}}, labeler)->status, 400);
  EXPECT_EQ(labeler.Post("/v2/models/fashion/feedback", "{", "application/json")->status, 400);
  // fb-2 is still answerable after the bad attempts.
  EXPECT_EQ(post({{"id", "fb-2"}, {"label", 3}}, labeler)->status, 200);
  const auto m = s.client().Get("/metrics");
  const std::string correct_line =
      "bulwark_feedback_total{model=\"fashion\",result=\"correct\"} " + std::to_string(1 + fb2_correct);
  EXPECT_NE(m->body.find(correct_line), std::string::npos) << m->body;
}

// Answers are remembered for feedback only while a token can post it: without tokens, or with no
// token holding the 'feedback' role, the table would fill with ids nobody can label (the soak's
// RSS growth). A token reload that grants the role turns it on; one that takes it away forgets.
TEST(Guard, AnswersAreRememberedOnlyWhileSomeoneCanLabelThem) {
  auto remembered = [](TestServer& s) { return s.core->guard_status()["guard"]["feedback"]["remembered"].get<int64_t>(); };
  auto infer = [](TestServer& s, const std::string& token, const std::string& id) {
    auto c = s.client(token);
    const auto r = c.Post("/v2/models/fashion/infer", image_body(torch::rand({1, 1, 28, 28}), id).dump(), "application/json");
    ASSERT_EQ(r->status, 200) << r->body;
  };
  TestServer open({}, /*auth=*/false);
  for (int i = 0; i < 5; ++i) infer(open, "", "open-" + std::to_string(i));
  EXPECT_EQ(remembered(open), 0);

  TestServer s;  // the fixture's tokens include a labeler
  for (int i = 0; i < 5; ++i) infer(s, kInferToken, "id-" + std::to_string(i));
  EXPECT_EQ(remembered(s), 5);
  using serve::Role;
  s.core->set_tokens(serve::TokenStore::from_entries(
      {{"client", serve::sha256_hex(kInferToken), {Role::kInfer}, 0, 0}}));  // nobody may label now
  EXPECT_EQ(remembered(s), 0);
  infer(s, kInferToken, "id-5");
  EXPECT_EQ(remembered(s), 0);
  s.core->set_tokens(fixture_tokens());
  infer(s, kInferToken, "id-6");
  EXPECT_EQ(remembered(s), 1);
  auto labeler = s.client(kFeedbackToken);
  EXPECT_EQ(labeler.Post("/v2/models/fashion/feedback", json{{"id", "id-6"}, {"label", 3}}.dump(), "application/json")->status, 200);
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
  const auto metrics = s.client().Get("/metrics")->body;
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
