// The load generator against a real in-process server on loopback: the per-second JSON lines and
// their contract, phase order, accuracies checked against the served model run locally on exactly
// the inputs sent, feedback counted by the server, flags, and a dead endpoint.
#include "traffic/traffic.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <torch/torch.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <atomic>
#include <future>
#include <set>
#include <sstream>

#include "core/error.h"
#include "model/model.h"
#include "serve/rest_codec.h"
#include "serve/server_fixture.h"

namespace bulwark::testing {
namespace {

using nlohmann::json;

const std::set<std::string> kContractFields = {
    "t",       "time_s",         "phase",          "sent",         "ok",
    "failed",  "benign_n",       "benign_correct", "attacked_n",   "attacked_correct",
    "flagged", "latency_ms_p50", "latency_ms_p99", "model_version"};

traffic::TrafficOptions options_for(const TestServer& s, const std::string& out, const std::vector<std::string>& phases,
                                    const std::string& attacker_model = "") {
  traffic::TrafficOptions o;
  o.client.url = "http://127.0.0.1:" + std::to_string(s.http->port());
  o.client.model = "fashion";
  o.client.token = kInferToken;
  o.client.feedback_token = kFeedbackToken;
  o.client.timeout_s = 5;
  for (const auto& p : phases) o.phases.push_back(traffic::parse_phase(p));
  traffic::resolve_attacker_models(o.phases, attacker_model);
  o.rate_per_s = 20;
  o.attacked_share = 0.5;
  o.concurrency = 3;
  o.out = out;
  o.n = 64;
  o.pgd_steps = 5;
  o.progress = false;
  return o;
}

std::vector<json> read_lines(const std::string& path) {
  std::vector<json> out;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) out.push_back(json::parse(line));
  return out;
}

int64_t sum_field(const std::vector<json>& lines, const char* field) {
  int64_t s = 0;
  for (const auto& l : lines) s += l[field].get<int64_t>();
  return s;
}

// Sum of a Prometheus counter's samples whose labels contain every `must` fragment.
double metric_sum(const TestServer& s, const std::string& name, const std::vector<std::string>& must) {
  auto c = s.client(kAdminToken);  // the detector and feedback series are for the metrics and admin roles
  const auto res = c.Get("/metrics");
  EXPECT_TRUE(res && res->status == 200);
  std::istringstream in(res ? res->body : "");
  double total = 0;
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(name + "{", 0) != 0) continue;
    bool all = true;
    for (const auto& m : must) all = all && line.find(m) != std::string::npos;
    if (all) total += std::stod(line.substr(line.rfind(' ') + 1));
  }
  return total;
}

struct Recorded {
  std::vector<traffic::RequestRecord> records;
  traffic::RequestObserver observer() {
    return [this](const traffic::RequestRecord& r) { records.push_back(r); };
  }
};

// The served model's predictions on `inputs` [N, C, H, W] and whether each is a near-tie (top-2
// logits within 1e-4), where the server's batched forward pass may legitimately round the other way.
struct LocalPredictions {
  std::vector<int64_t> predicted;
  std::vector<bool> near_tie;
};
LocalPredictions predict_locally(const std::string& model_path, const torch::Tensor& inputs) {
  auto m = model::Model::load(model_path);
  torch::NoGradGuard no_grad;
  const auto logits = m.logits(inputs);
  const auto top2 = logits.topk(2, 1);
  const auto gap = (std::get<0>(top2).select(1, 0) - std::get<0>(top2).select(1, 1));
  LocalPredictions p;
  const auto pred = logits.argmax(1);
  for (int64_t i = 0; i < inputs.size(0); ++i) {
    p.predicted.push_back(pred[i].item<int64_t>());
    p.near_tie.push_back(gap[i].item<float>() < 1e-4f);
  }
  return p;
}

int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);  // nothing listens there now
  return ntohs(a.sin_port);
}

template <typename F>
void expect_invalid(F&& f, const std::string& flag) {
  try {
    f();
    ADD_FAILURE() << "no error; expected one naming " << flag;
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kInvalidArgument) << e.what();
    EXPECT_NE(std::string(e.what()).find(flag), std::string::npos) << e.what();
  }
}

TEST(TrafficPhases, ParsesKindsSecondsEpsAndModel) {
  const auto b = traffic::parse_phase("benign:20");
  EXPECT_EQ(b.kind, traffic::PhaseKind::kBenign);
  EXPECT_EQ(b.seconds, 20);
  const auto p = traffic::parse_phase("pgd:30:0.1:/models/a:b.pt");
  EXPECT_EQ(p.kind, traffic::PhaseKind::kPgd);
  EXPECT_EQ(p.seconds, 30);
  EXPECT_DOUBLE_EQ(p.eps_linf, 0.1);
  EXPECT_EQ(p.attacker_model, "/models/a:b.pt");  // colons after the third stay in the path
  EXPECT_TRUE(p.transfer());
  const auto sq = traffic::parse_phase("square:5:0.05");
  EXPECT_TRUE(sq.attacked());
  EXPECT_FALSE(sq.transfer());

  std::vector<traffic::Phase> phases = {traffic::parse_phase("fgsm:5:0.1"), p};
  traffic::resolve_attacker_models(phases, "default.pt");
  EXPECT_EQ(phases[0].attacker_model, "default.pt");
  EXPECT_EQ(phases[1].attacker_model, "/models/a:b.pt");
}

TEST(TrafficPhases, BadPhasesAndFlagsNameTheFlag) {
  for (const char* bad : {"bogus:5", "benign", "benign:0", "benign:86401", "benign:1.5", "benign:5:0.1", "fgsm:5",
                          "fgsm:5:0", "fgsm:5:1.5", "pgd:5:nan", "square:5:0.1:m.pt", "pgd:5:0.1:"}) {
    expect_invalid([&] { traffic::parse_phase(bad); }, "--phase");
  }
  std::vector<traffic::Phase> needs_model = {traffic::parse_phase("pgd:5:0.1")};
  expect_invalid([&] { traffic::resolve_attacker_models(needs_model, ""); }, "--attacker-model");
  std::vector<traffic::Phase> none;
  expect_invalid([&] { traffic::resolve_attacker_models(none, "m.pt"); }, "--phase");

  traffic::TrafficOptions o;
  o.client.url = "http://127.0.0.1:8000";
  o.client.model = "fashion";
  o.phases = {traffic::parse_phase("benign:1")};
  o.out = "x.jsonl";
  EXPECT_NO_THROW(o.validate());
  const auto with = [&o](auto change) {
    auto c = o;
    change(c);
    return c;
  };
  expect_invalid([&] { with([](auto& c) { c.rate_per_s = 0; }).validate(); }, "--rate");
  expect_invalid([&] { with([](auto& c) { c.rate_per_s = 10001; }).validate(); }, "--rate");
  expect_invalid([&] { with([](auto& c) { c.attacked_share = 1.5; }).validate(); }, "--attacked-share");
  expect_invalid([&] { with([](auto& c) { c.concurrency = 0; }).validate(); }, "--concurrency");
  expect_invalid([&] { with([](auto& c) { c.out = ""; }).validate(); }, "--out");
  expect_invalid([&] { with([](auto& c) { c.client.timeout_s = 0; }).validate(); }, "--timeout-s");
  expect_invalid([&] { with([](auto& c) { c.client.model = "a/b"; }).validate(); }, "--model");
  for (const char* url : {"127.0.0.1:8000", "ftp://h:1", "http://", "http://h:0", "http://h:99999", "http://h:80/v2",
                          "http://u@h:80", "http://h:", "http://h:8x"}) {
    expect_invalid([&] { with([url](auto& c) { c.client.url = url; }).validate(); }, "--url");
  }
  EXPECT_EQ(traffic::parse_url("https://[::1]:8443/").origin(), "https://::1:8443");
  EXPECT_EQ(traffic::parse_url("http://localhost").port, 80);
}

// The request goes through the server's own parser bit-exact; the server's response decodes.
TEST(TrafficClient, RequestAndResponseRoundTripThroughTheServerCodec) {
  std::vector<float> x(784);
  for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(i) / 783.0f + 1e-7f;
  size_t json_len = 0;
  const auto body = traffic::encode_infer_request(x.data(), {1, 1, 28, 28}, &json_len);
  const auto req = serve::parse_infer_request(body, json_len, {});
  ASSERT_EQ(req.inputs.size(), 1u);
  EXPECT_EQ(req.inputs[0].shape, (std::vector<int64_t>{1, 1, 28, 28}));
  EXPECT_EQ(req.inputs[0].values, x);
  ASSERT_EQ(req.outputs.size(), 1u);
  EXPECT_EQ(req.outputs[0].name, "logits");

  serve::InferResponse resp;
  resp.model = "fashion";
  resp.version = "3";
  resp.id = "bw-7";
  resp.outputs.push_back({"logits", "FP32", {2, 3}, {0.1f, 0.7f, 0.7f, 2.f, -1.f, 0.f}, {}, false});
  resp.attack_scores = {0.9f, 0.2f};
  resp.attack_flags = {true, false};
  resp.scorer = "max-softmax";
  std::optional<size_t> len;
  const auto r = traffic::decode_infer_response(serve::format_infer_response(resp, &len));
  ASSERT_TRUE(r.ok) << r.error;
  EXPECT_EQ(r.id, "bw-7");
  EXPECT_EQ(r.model_version, "3");
  EXPECT_EQ(r.predicted, (std::vector<int64_t>{1, 0}));  // ties go to the first maximum, as torch::argmax
  EXPECT_EQ(r.flagged, 1);
  EXPECT_FALSE(traffic::decode_infer_response("{\"outputs\":[]}").ok);
  EXPECT_FALSE(traffic::decode_infer_response("not json").ok);
}

// Three phases at 20 requests/s: one line per second with exactly the contract's fields, phases in
// order, accuracies equal to the served model's own on the inputs sent, feedback counted.
TEST(TrafficRun, PhasesAgainstRealServerMatchTheServedModel) {
  TestServer s;
  const auto out = s.dir.file("traffic.jsonl");
  auto o = options_for(s, out, {"benign:1", "fgsm:1:0.1:" + s.model_a, "pgd:1:0.1"}, s.model_a);
  auto w = traffic::prepare_workload(o);
  ASSERT_EQ(w.plans.size(), 3u);
  const double feedback_before = metric_sum(s, "bulwark_feedback_total", {"model=\"fashion\""});
  Recorded rec;
  const auto report = traffic::run_traffic(w, o, rec.observer());

  const auto lines = read_lines(out);
  ASSERT_EQ(lines.size(), 3u);
  const std::vector<std::string> phases = {"benign", "fgsm", "pgd"};
  for (size_t t = 0; t < lines.size(); ++t) {
    std::set<std::string> keys;
    for (const auto& [k, v] : lines[t].items()) keys.insert(k);
    EXPECT_EQ(keys, kContractFields) << lines[t];
    EXPECT_EQ(lines[t]["t"], static_cast<int64_t>(t));
    EXPECT_EQ(lines[t]["phase"], phases[t]);
    EXPECT_EQ(lines[t]["model_version"], "1");
    EXPECT_EQ(lines[t]["flagged"], 0);  // the infer token does not see scores (--expose-scores admin)
    EXPECT_EQ(lines[t]["ok"].get<int64_t>() + lines[t]["failed"].get<int64_t>(), lines[t]["sent"].get<int64_t>());
    EXPECT_TRUE(lines[t]["latency_ms_p50"].is_number()) << lines[t];
  }
  EXPECT_NEAR(lines[1]["time_s"].get<double>() - lines[0]["time_s"].get<double>(), 1.0, 1e-9);
  EXPECT_EQ(lines[0]["attacked_n"], 0);
  EXPECT_EQ(lines[1]["attacked_n"], 10);  // exactly half of 20
  EXPECT_EQ(lines[2]["benign_n"], 10);

  // Every scheduled request was answered (loopback keeps up with 20/s).
  const int64_t ok = sum_field(lines, "ok");
  EXPECT_EQ(ok, 60);
  EXPECT_EQ(sum_field(lines, "failed"), 0);
  ASSERT_EQ(static_cast<int64_t>(rec.records.size()), 60);
  for (const auto& p : report.phases) EXPECT_EQ(p.counters.backlog_dropped, 0);

  // Run the served model locally on exactly what was sent.
  std::vector<torch::Tensor> inputs;
  for (const auto& r : rec.records) inputs.push_back(r.input);
  const auto local = predict_locally(s.model_a, torch::stack(inputs));
  int64_t benign_correct_local = 0, attacked_correct_local = 0, near_ties = 0, mismatches = 0;
  for (size_t i = 0; i < rec.records.size(); ++i) {
    const auto& r = rec.records[i];
    ASSERT_TRUE(r.ok) << r.error;
    if (r.attacked) {
      // The input is the adversarial crafted for this image, within eps of the clean one.
      const auto d = (r.input - w.x[r.image]).abs().max().item<float>();
      EXPECT_LE(d, 0.1f + 1e-6f);
      EXPECT_GT(d, 0.0f);
      EXPECT_TRUE(torch::equal(r.input, w.plans[r.phase].adversarial[r.image]));
    } else {
      EXPECT_TRUE(torch::equal(r.input, w.x[r.image]));
    }
    EXPECT_EQ(r.label, w.y[r.image].item<int64_t>());
    const bool correct = local.predicted[i] == r.label;
    (r.attacked ? attacked_correct_local : benign_correct_local) += correct;
    if (local.near_tie[i]) {
      ++near_ties;
    } else {
      mismatches += local.predicted[i] != r.predicted;
    }
  }
  EXPECT_EQ(mismatches, 0) << "the server and the local copy of the served model disagree";
  EXPECT_LE(std::abs(sum_field(lines, "benign_correct") - benign_correct_local), near_ties);
  EXPECT_LE(std::abs(sum_field(lines, "attacked_correct") - attacked_correct_local), near_ties);
  EXPECT_EQ(sum_field(lines, "benign_n"), 40);
  EXPECT_EQ(sum_field(lines, "attacked_n"), 20);

  // One feedback post per answer; the server's correct/wrong split matches the log's.
  const double feedback_after = metric_sum(s, "bulwark_feedback_total", {"model=\"fashion\""});
  EXPECT_EQ(feedback_after - feedback_before, static_cast<double>(ok));
  EXPECT_EQ(metric_sum(s, "bulwark_feedback_total", {"model=\"fashion\"", "result=\"correct\""}),
            static_cast<double>(sum_field(lines, "benign_correct") + sum_field(lines, "attacked_correct")));

  ASSERT_EQ(report.phases.size(), 3u);
  EXPECT_EQ(report.phases[1].counters.attacked_n, 10);
  EXPECT_EQ(report.phases[0].versions, std::set<std::string>{"1"});
  EXPECT_EQ(report.phases[2].scheduled, 20);
}

// With a token that may see scores, `flagged` sums the guard's flags, as the server counts them.
TEST(TrafficRun, FlaggedMatchesTheServersCount) {
  TestServer s;
  const auto out = s.dir.file("flagged.jsonl");
  auto o = options_for(s, out, {"fgsm:2:0.2"}, s.model_a);
  o.client.token = kAdminToken;
  o.feedback = false;
  auto w = traffic::prepare_workload(o);
  const double before = metric_sum(s, "bulwark_attack_flagged_total", {"model=\"fashion\""});
  const auto report = traffic::run_traffic(w, o);
  const auto lines = read_lines(out);
  ASSERT_EQ(lines.size(), 2u);
  const double after = metric_sum(s, "bulwark_attack_flagged_total", {"model=\"fashion\""});
  EXPECT_GT(sum_field(lines, "flagged"), 0);  // the random-weight model is unsure: max-softmax flags it
  EXPECT_EQ(static_cast<double>(sum_field(lines, "flagged")), after - before);
  EXPECT_EQ(sum_field(lines, "ok"), 40);
  EXPECT_EQ(metric_sum(s, "bulwark_feedback_total", {"model=\"fashion\""}), 0.0);  // --no-feedback
}

// Square queries the live endpoint during its phase; what it sends stays in the eps-ball and the
// server's answers agree with the served model run locally.
TEST(TrafficRun, SquarePhaseCraftsAgainstTheEndpoint) {
  TestServer s;
  const auto out = s.dir.file("square.jsonl");
  auto o = options_for(s, out, {"square:2:0.1"});
  o.n = 16;
  o.square_queries = 20;
  auto w = traffic::prepare_workload(o);
  ASSERT_TRUE(w.plans[0].square);
  EXPECT_GT(w.plans[0].square->counts().queries, 0);  // warm-up queried the server
  Recorded rec;
  const auto report = traffic::run_traffic(w, o, rec.observer());
  const auto lines = read_lines(out);
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[0]["phase"], "square");
  EXPECT_EQ(sum_field(lines, "attacked_n"), 20);
  EXPECT_GT(report.phases[0].square_queries, 0);  // it kept querying during the phase
  std::vector<torch::Tensor> inputs;
  for (const auto& r : rec.records) {
    ASSERT_TRUE(r.ok) << r.error;
    if (r.attacked) {
      EXPECT_LE((r.input - w.x[r.image]).abs().max().item<float>(), 0.1f + 1e-6f);
    }
    inputs.push_back(r.input);
  }
  const auto local = predict_locally(s.model_a, torch::stack(inputs));
  for (size_t i = 0; i < rec.records.size(); ++i) {
    if (!local.near_tie[i]) {
      EXPECT_EQ(local.predicted[i], rec.records[i].predicted) << i;
    }
  }
}

// Nothing listens: every request fails fast and is counted; the run ends on time.
TEST(TrafficRun, DeadUrlGivesFailedCountsNotAHang) {
  TestServer s;  // only for its temp dir and a model file
  const auto out = s.dir.file("dead.jsonl");
  auto o = options_for(s, out, {"benign:1", "fgsm:1:0.1"}, s.model_a);
  o.client.url = "http://127.0.0.1:" + std::to_string(free_port());
  o.client.timeout_s = 1;
  auto w = traffic::prepare_workload(o);
  auto run = std::async(std::launch::async, [&] { return traffic::run_traffic(w, o); });
  ASSERT_EQ(run.wait_for(std::chrono::seconds(20)), std::future_status::ready) << "the run hung";
  const auto report = run.get();
  const auto lines = read_lines(out);
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(sum_field(lines, "ok"), 0);
  EXPECT_EQ(sum_field(lines, "failed"), sum_field(lines, "sent"));
  EXPECT_GT(sum_field(lines, "sent"), 0);
  EXPECT_TRUE(lines[0]["latency_ms_p50"].is_null());
  EXPECT_EQ(lines[0]["model_version"], "");
  EXPECT_NE(report.phases[0].first_error.find("transport"), std::string::npos) << report.phases[0].first_error;
}

// The command: tokens from a file and the environment (never flags), --json summary, exit codes.
TEST(TrafficRun, AStopEndsTheRunEarlyAndAppendContinuesTheClock) {
  TestServer s;
  const auto out = s.dir.file("log.jsonl");
  auto o = options_for(s, out, {"benign:60"}, s.model_a);
  o.stop = std::make_shared<std::atomic<bool>>(false);
  auto w = traffic::prepare_workload(o);
  auto run = std::async(std::launch::async, [&] { return traffic::run_traffic(w, o); });
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  const auto complete_lines = [&out] {  // counts newlines: a line being written is not parsed
    std::ifstream in(out);
    return std::count(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>(), '\n');
  };
  while (complete_lines() < 2 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));  // polled until two seconds are written
  }
  ASSERT_GE(complete_lines(), 2) << "no lines written within 20 s";
  o.stop->store(true);
  ASSERT_EQ(run.wait_for(std::chrono::seconds(10)), std::future_status::ready) << "a stopped run kept going";
  run.get();
  auto first = read_lines(out);
  ASSERT_GE(first.size(), 2u);
  ASSERT_LT(first.size(), 10u) << "the stop did not end the 60 s phase early";
  EXPECT_EQ(sum_field(first, "ok"), sum_field(first, "sent")) << "requests already scheduled were lost";

  // A second run appended to the same log: t continues from the first line's clock.
  auto o2 = options_for(s, out, {"benign:2"}, s.model_a);
  o2.append = true;
  auto w2 = traffic::prepare_workload(o2);
  traffic::run_traffic(w2, o2);
  const auto all = read_lines(out);
  ASSERT_EQ(all.size(), first.size() + 2);
  for (size_t i = 1; i < all.size(); ++i) EXPECT_LT(all[i - 1]["t"].get<double>(), all[i]["t"].get<double>());
  const double t0 = all[0]["time_s"].get<double>();
  for (const auto& line : all) {
    EXPECT_NEAR(line["t"].get<double>(), line["time_s"].get<double>() - t0, 1.5) << line.dump();
  }
}

TEST(TrafficCli, RunsAgainstServerWithTokensFromFileAndEnv) {
  TestServer s;
  const auto out = s.dir.file("cli.jsonl");
  const auto token_file = s.dir.file("feedback.token");
  std::ofstream(token_file) << kFeedbackToken << "\n";
  const std::string url = "http://127.0.0.1:" + std::to_string(s.http->port());
  const auto r = run_command(std::string("BULWARK_TOKEN=") + kInferToken + " " + BULWARK_BIN +
                             " --json --threads 1 traffic --url " + url +
                             " --model fashion --phase benign:1 --rate 10 --n 20 "
                             "--out " +
                             out + " --feedback-token-file " + token_file + " --quiet");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto summary = json::parse(r.output.substr(r.output.find('{')));
  EXPECT_EQ(summary["phases"][0]["ok"], 10);
  EXPECT_EQ(summary["phases"][0]["feedback_failed"], 0);
  EXPECT_EQ(read_lines(out).size(), 1u);
  EXPECT_EQ(metric_sum(s, "bulwark_feedback_total", {"model=\"fashion\""}), 10.0);

  // Without a token the server refuses (401) and the command fails with exit 1.
  const auto refused =
      run_command(std::string("env -u BULWARK_TOKEN -u BULWARK_FEEDBACK_TOKEN ") + BULWARK_BIN + " traffic --url " +
                  url + " --model fashion --phase benign:1 --rate 5 --n 5 --out " + out + " --quiet");
  EXPECT_EQ(refused.exit_code, 1) << refused.output;
  EXPECT_NE(refused.output.find("HTTP 401"), std::string::npos) << refused.output;
}

TEST(TrafficCli, BadFlagsExitTwoNamingTheFlag) {
  const std::string base = std::string(BULWARK_BIN) + " traffic --model fashion --out /dev/null ";
  const std::string url = " --url http://127.0.0.1:9";
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"--phase benign:1 --rate 0" + url, "--rate"},
      {"--phase bogus:5" + url, "--phase"},
      {"--phase pgd:5:0.1" + url, "--attacker-model"},
      {"--phase fgsm:5:2:m.pt" + url, "--phase"},
      {"--phase benign:1 --attacked-share 2" + url, "--attacked-share"},
      {"--phase benign:1 --url ftp://x", "--url"},
  };
  for (const auto& [args, flag] : cases) {
    const auto r = run_command(base + args);
    EXPECT_EQ(r.exit_code, 2) << args << "\n" << r.output;
    EXPECT_NE(r.output.find(flag), std::string::npos) << args << "\n" << r.output;
  }
}

}  // namespace
}  // namespace bulwark::testing
