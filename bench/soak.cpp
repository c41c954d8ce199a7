// bench/soak — hostile saturation load against a real `bulwark serve` process (the issue's "soak
// and fault tests" item), then SIGTERM with requests in flight.
//   build/bench/soak BULWARK_BINARY MODEL.pt|- [SECONDS=600] [--out results.json] [--seed N] [--keep]
//                    [--server-env NAME=VALUE]...   (for diagnosis, e.g. GLIBC_TUNABLES=glibc.malloc.arena_max=2)
// For SECONDS, concurrently: valid inference over REST (JSON and binary tensors) and gRPC, closed
// loop; invalid, oversized and unauthenticated requests; slow clients dribbling a byte a second or
// holding idle connections; a model that throws on some inputs; a rate-limited token; and a hot
// swap every 5 s (SIGHUP with the model file rewritten, then an admin repository load, in turn).
// Acceptance: 0 failed valid requests (429/503 only where the docs promise them), every hostile
// request answered with its documented 4xx (the throwing model: a 500 naming only the request id),
// server RSS growth < 5 % from the end of the warm-up to the end, no metric series from names that
// unauthenticated or unknown requests chose, every swap applied, and a clean drain: exit 0 within
// --drain-timeout-ms after the longest a request may take (--request-timeout-ms, or the 30 s a
// trickling REST client may take to send one, docs/security.md), no request dropped mid-response.
// Prints a table and a PASS/FAIL line per criterion; exit 0 all pass, 1 one failed, 2 bad usage.
// MODEL `-`: a Fashion-MNIST-shaped zoo `cnn` with random weights. The throwing model is
// TorchScript defined here from source. Everything random is seeded (--seed, default 1).
#include <arpa/inet.h>
#include <fcntl.h>
#include <grpcpp/grpcpp.h>
#include <httplib.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <torch/csrc/jit/frontend/resolver.h>
#include <torch/csrc/jit/frontend/sugared_value.h>
#include <torch/script.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <thread>

#include "core/digest.h"
#include "grpc_predict_v2.grpc.pb.h"
#include "model/zoo.h"

namespace {

using Clock = std::chrono::steady_clock;
using nlohmann::json;
namespace fs = std::filesystem;

// The server's settings; the checks below depend on them.
constexpr int kThreads = 96;  // above --max-queue, and the ~25 connections the soak holds
constexpr int kMaxBatch = 32;
constexpr int kMaxQueue = 64;  // 16 valid clients of 1..4 rows fill it; one more row gets 503
constexpr int kRequestTimeoutMs = 5000;
constexpr int kDrainTimeoutMs = 5000;
// docs/security.md: a client trickling bytes holds a request thread for up to 30 s per request,
// and stopping the REST frontend waits for those threads.
constexpr int kHttpReadBoundS = 30;
constexpr int kMaxBodyBytes = 1 << 20;
constexpr double kLimitedRatePerS = 20;  // the rate-limited token; its client tries about twice that
constexpr int kSwapEveryS = 5;
constexpr int kRssEveryS = 5;    // sampled often: a swap holds two models for a moment
constexpr int kRssWindowS = 60;  // start and end RSS: medians over the first and the last minute (a
                                 // quarter of the run each when shorter)
constexpr int kProgressEveryS = 30;
constexpr int kValues = 784;    // 1x28x28
constexpr float kTrip = 0.99f;  // flaky_model() fails when x[0,0,0,0] (raise) or x[0,0,0,1] (LibTorch) is above
// What a 500 from the flaky model must not carry: its TorchScript source, traces, library names.
const std::vector<std::string> kLeaks = {"Traceback",   ".py",          "at::",         "torch",
                                         "TorchScript", "flaky_secret", "RuntimeError", "mat1"};

double since_s(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

double percentile(std::vector<float> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(q * static_cast<double>(v.size())))];
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

void replace_all(std::string& s, const std::string& from, const std::string& to) {
  for (size_t at = s.find(from); at != std::string::npos; at = s.find(from, at + to.size()))
    s.replace(at, from.size(), to);
}

// --- what happened: per (kind, result) counts, one tally per client thread, merged at the end ---

enum class Verdict { kExpected, kRefused, kFailed };  // kRefused: 429/503 where the docs promise them
const char* to_string(Verdict v) {
  return v == Verdict::kExpected ? "expected" : v == Verdict::kRefused ? "refused (documented)" : "FAILED";
}

struct Count {
  uint64_t n = 0;
  Verdict verdict = Verdict::kExpected;
  std::string sample;  // the first answer's detail, for the report
};

struct Tally {
  std::map<std::pair<std::string, std::string>, Count> counts;  // (kind, result)
  std::vector<float> latency_ms;                                // answered valid requests (200 / OK)
};

// Read by the progress line while clients run.
struct Live {
  std::atomic<uint64_t> requests{0}, failed{0};
};

// --- the server under test, as a child process (the pattern of tests/serve/server_process.h) ---

class ServerProcess {
 public:
  ServerProcess(const std::string& binary, const std::vector<std::string>& args, const std::string& stderr_path,
                const std::vector<std::string>& env) {
    int out[2];
    if (::pipe(out) != 0) throw std::runtime_error("pipe");
    pid_ = ::fork();
    if (pid_ == 0) {
      ::dup2(out[1], 1);
      ::close(out[0]);
      const int err = ::open(stderr_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
      if (err >= 0) ::dup2(err, 2);
      std::vector<char*> argv{const_cast<char*>(binary.c_str())};
      for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
      argv.push_back(nullptr);
      for (const auto& e : env) ::putenv(const_cast<char*>(e.c_str()));
      ::execv(binary.c_str(), argv.data());
      ::_exit(127);
    }
    ::close(out[1]);
    out_ = ::fdopen(out[0], "r");
  }
  ~ServerProcess() {
    if (!exited_) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    std::fclose(out_);
  }
  std::string first_line() {
    char buf[1024];
    return std::fgets(buf, sizeof buf, out_) ? std::string(buf) : "";
  }
  pid_t pid() const { return pid_; }
  void signal(int sig) const { ::kill(pid_, sig); }
  // The exit code (-1: ended by a signal), or nullopt while it still runs after `timeout_s`.
  std::optional<int> wait_exit(double timeout_s) {
    const auto t0 = Clock::now();
    for (;;) {
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        exited_ = true;
        return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
      }
      if (since_s(t0) > timeout_s) return std::nullopt;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }
  // A KiB field of /proc/PID/status: VmRSS, or its parts RssAnon (heap, stacks) and RssFile
  // (mapped library pages); 0 once gone.
  long status_kib(const std::string& field = "VmRSS") const {
    std::ifstream in("/proc/" + std::to_string(pid_) + "/status");
    std::string line;
    while (std::getline(in, line)) {
      if (line.rfind(field + ":", 0) == 0) return std::atol(line.c_str() + field.size() + 1);
    }
    return 0;
  }
  long rss_kib() const { return status_kib(); }

 private:
  pid_t pid_ = -1;
  FILE* out_ = nullptr;
  bool exited_ = false;
};

// --- models, tokens and the server's command line, in a temp dir ---

struct Workspace {
  std::string dir;
  std::string infer_token, admin_token, limited_token;
  std::string live() const { return dir + "/good.pt"; }  // what --model names; SIGHUP swaps rewrite it
  std::string file(const std::string& name) const { return dir + "/" + name; }
};

// `torch.*` as the native resolver has it, plus RuntimeError (Python's resolver would supply it).
struct FlakyResolver : torch::jit::Resolver {
  std::shared_ptr<torch::jit::SugaredValue> resolveValue(const std::string& name, torch::jit::GraphFunction&,
                                                         const torch::jit::SourceRange&) override {
    if (name == "torch") return std::make_shared<torch::jit::BuiltinModule>("aten");
    if (name == "RuntimeError") return std::make_shared<torch::jit::ExceptionValue>("builtins.RuntimeError");
    return nullptr;
  }
  torch::jit::TypePtr resolveType(const std::string&, const torch::jit::SourceRange&) override { return nullptr; }
};

// Raises RuntimeError or fails inside LibTorch (a shape error carrying the source) on a tripped
// first or second pixel; otherwise logits. The all-zero warm-up input passes.
bulwark::model::Model flaky_model() {
  torch::jit::Module m("__torch__.Flaky");
  m.define(R"(
def forward(self, x):
    flat = x.reshape(x.size(0), -1)
    if float(flat[0, 0]) > 0.99:
        raise RuntimeError("flaky_secret_marker: tripped at /srv/models/flaky.py line 4")
    if float(flat[0, 1]) > 0.99:
        flaky_secret_weights = torch.zeros(3, 10)
        return torch.mm(flat, flaky_secret_weights)
    return flat[:, 0:10] * 2.0 - 1.0
)",
           std::make_shared<FlakyResolver>());
  return bulwark::model::Model(m, bulwark::model::default_spec(10));
}

Workspace make_workspace(const std::string& model, uint64_t seed) {
  std::string tmpl = (fs::temp_directory_path() / "bulwark-soak-XXXXXX").string();
  if (!::mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
  Workspace w{tmpl, "soak-infer-" + std::to_string(seed), "soak-admin-" + std::to_string(seed),
              "soak-limited-" + std::to_string(seed)};
  namespace bm = bulwark::model;
  auto a = model == "-" ? bm::create_model("cnn", bm::default_spec(10), seed) : bm::Model::load(model);
  a.save(w.file("good-a.pt"));
  // The same model with other bytes (a swap to identical bytes is no swap): one weight nudged.
  auto b = a.clone();
  {
    torch::NoGradGuard ng;
    b.parameters().back().add_(1e-6);
  }
  b.save(w.file("good-b.pt"));
  fs::copy_file(w.file("good-a.pt"), w.live());
  flaky_model().save(w.file("flaky.pt"));
  std::ofstream(w.file("tokens.yaml")) << "tokens:\n"
                                       << "  - id: soak-client\n    sha256: " << bulwark::sha256_hex(w.infer_token)
                                       << "\n    roles: [infer]\n"
                                       << "  - id: soak-ops\n    sha256: " << bulwark::sha256_hex(w.admin_token)
                                       << "\n    roles: [infer, admin]\n"
                                       << "  - id: soak-limited\n    sha256: " << bulwark::sha256_hex(w.limited_token)
                                       << "\n    roles: [infer]\n    rate_per_s: " << kLimitedRatePerS
                                       << "\n    burst: " << kLimitedRatePerS << "\n";
  return w;
}

std::vector<std::string> server_args(const Workspace& w) {
  auto n = [](int v) { return std::to_string(v); };
  // One LibTorch thread: on 2 cores it serves more than two (docs/BENCHMARKS.md).
  std::vector<std::string> args = {"--json", "--threads", "1", "serve", "--allow-unsigned"};
  const std::vector<std::pair<std::string, std::string>> flags = {
      {"--model", "good=" + w.live()},
      {"--model", "flaky=" + w.file("flaky.pt")},
      {"--model-root", w.dir},
      {"--tokens", w.file("tokens.yaml")},
      {"--http-port", "0"},
      {"--grpc-port", "0"},
      {"--threads", n(kThreads)},
      {"--max-batch", n(kMaxBatch)},
      {"--max-queue", n(kMaxQueue)},
      {"--request-timeout-ms", n(kRequestTimeoutMs)},
      {"--drain-timeout-ms", n(kDrainTimeoutMs)},
      {"--max-body-bytes", n(kMaxBodyBytes)},
      {"--access-log", "/dev/null"},
  };
  for (const auto& [flag, value] : flags) args.insert(args.end(), {flag, value});
  return args;
}

// --- the shared state of a run ---

struct Soak {
  Workspace ws;
  ServerProcess* server = nullptr;
  int http_port = 0, grpc_port = 0;
  uint64_t seed = 1;
  Live live;
  std::atomic<bool> stop_load{false}, stop_slow{false};
  // Steady-clock ns: when SIGTERM went, and when the server last ended a slow connection after it.
  std::atomic<int64_t> sigterm_ns{0}, slow_closed_after_sigterm_ns{0};
  std::atomic<int> swaps{0};

  void record(Tally& t, const std::string& kind, const std::string& result, Verdict v, const std::string& detail = "") {
    auto& c = t.counts[{kind, result}];
    if (c.n++ == 0) {
      c.verdict = v;
      c.sample = detail.substr(0, 300);
    }
    ++live.requests;
    if (v == Verdict::kFailed) ++live.failed;
  }
  httplib::Client http(const std::string& token) const {
    httplib::Client c("127.0.0.1", http_port);
    c.set_keep_alive(true);
    c.set_tcp_nodelay(true);
    c.set_read_timeout(30, 0);
    if (!token.empty()) c.set_default_headers({{"Authorization", "Bearer " + token}});
    return c;
  }
  std::unique_ptr<inference::GRPCInferenceService::Stub> grpc() const {
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);  // a connection per client, as separate processes have
    args.SetMaxReceiveMessageSize(-1);
    return inference::GRPCInferenceService::NewStub(
        grpc::CreateCustomChannel("127.0.0.1:" + std::to_string(grpc_port), grpc::InsecureChannelCredentials(), args));
  }
};

// --- requests ---

std::vector<float> image_values(int rows, std::mt19937_64& rng) {
  std::uniform_real_distribution<float> u(0.0f, kTrip - 0.01f);  // never trips the flaky model
  std::vector<float> v(static_cast<size_t>(rows) * kValues);
  for (auto& x : v) x = u(rng);
  return v;
}

json input_json(int rows, const std::string& datatype = "FP32") {
  return {{"name", "input"}, {"shape", {rows, 1, 28, 28}}, {"datatype", datatype}};
}

std::string json_body(const std::vector<float>& values, int rows) {
  auto in = input_json(rows);
  in["data"] = values;
  return json{{"inputs", {in}}}.dump();
}

// Triton's binary extension: the JSON header, then the raw tensor; its length in a header.
std::pair<std::string, size_t> binary_body(const std::vector<float>& values, int rows) {
  auto in = input_json(rows);
  in["parameters"] = {{"binary_data_size", values.size() * 4}};
  const auto head = json{{"inputs", {in}}}.dump();
  return {head + std::string(reinterpret_cast<const char*>(values.data()), values.size() * 4), head.size()};
}

inference::ModelInferRequest grpc_request(const std::string& model, const std::vector<float>& values, int rows) {
  inference::ModelInferRequest q;
  q.set_model_name(model);
  auto* in = q.add_inputs();
  in->set_name("input");
  in->set_datatype("FP32");
  for (const int64_t d : {static_cast<int64_t>(rows), int64_t{1}, int64_t{28}, int64_t{28}}) in->add_shape(d);
  q.add_raw_input_contents(std::string(reinterpret_cast<const char*>(values.data()), values.size() * 4));
  return q;
}

const char* code_name(grpc::StatusCode c) {
  static const std::map<grpc::StatusCode, const char*> names = {{grpc::OK, "OK"},
                                                                {grpc::CANCELLED, "CANCELLED"},
                                                                {grpc::UNKNOWN, "UNKNOWN"},
                                                                {grpc::INVALID_ARGUMENT, "INVALID_ARGUMENT"},
                                                                {grpc::DEADLINE_EXCEEDED, "DEADLINE_EXCEEDED"},
                                                                {grpc::NOT_FOUND, "NOT_FOUND"},
                                                                {grpc::PERMISSION_DENIED, "PERMISSION_DENIED"},
                                                                {grpc::RESOURCE_EXHAUSTED, "RESOURCE_EXHAUSTED"},
                                                                {grpc::INTERNAL, "INTERNAL"},
                                                                {grpc::UNAVAILABLE, "UNAVAILABLE"},
                                                                {grpc::UNAUTHENTICATED, "UNAUTHENTICATED"}};
  const auto it = names.find(c);
  return it == names.end() ? "OTHER" : it->second;
}

void set_call(grpc::ClientContext& ctx, const std::string& token) {
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  if (!token.empty()) ctx.AddMetadata("authorization", "Bearer " + token);
}

// A hostile REST request and what the docs say it gets. `{n}` in the path becomes a fresh number.
struct HttpCase {
  std::string kind, method, path, token, body;
  httplib::Headers headers;
  int want = 400;
  std::string names;  // the error body must contain this (the field, or the rule)
};

httplib::Result send(httplib::Client& c, const HttpCase& k, const std::string& path) {
  auto headers = k.headers;
  if (!k.token.empty()) headers.emplace("Authorization", "Bearer " + k.token);
  if (k.method == "GET") return c.Get(path.c_str(), headers);
  return c.Post(path.c_str(), headers, k.body, "application/json");
}

// `previous`: the request before this one on the same connection (a transport error may be its doing).
void check_http(Soak& s, Tally& t, const HttpCase& k, const httplib::Result& r, const std::string& previous) {
  if (!r) {
    return s.record(t, k.kind, "transport " + httplib::to_string(r.error()), Verdict::kFailed,
                    "previous request on this keep-alive connection: " + previous);
  }
  const auto status = std::to_string(r->status);
  if (r->status != k.want) return s.record(t, k.kind, status, Verdict::kFailed, r->body);
  // A body refused unread ends the connection; a keep-alive client must be told, or its next
  // request goes out on a closed connection.
  if (r->status == 413 && r->get_header_value("Connection") != "close") {
    return s.record(t, k.kind, status + " without Connection: close", Verdict::kFailed,
                    "headers: Keep-Alive: " + r->get_header_value("Keep-Alive"));
  }
  if (r->status == 401 && r->get_header_value("WWW-Authenticate") != "Bearer") {
    return s.record(t, k.kind, status + " without WWW-Authenticate", Verdict::kFailed, r->body);
  }
  if (!contains(r->body, k.names)) {
    return s.record(t, k.kind, status + " not naming '" + k.names + "'", Verdict::kFailed, r->body);
  }
  s.record(t, k.kind, status, Verdict::kExpected);
}

// Authenticated but wrong, or too big: 400/404/413 naming what is wrong.
std::vector<HttpCase> invalid_http_cases(const Workspace& w, std::mt19937_64& rng) {
  const auto one = image_values(1, rng);
  auto body_with = [&](json in) { return json{{"inputs", {in}}}.dump(); };
  auto in = [&](int rows, std::vector<float> data, const std::string& datatype = "FP32") {
    auto j = input_json(rows, datatype);
    j["data"] = std::move(data);
    return j;
  };
  auto shape = in(1, std::vector<float>(one.begin(), one.begin() + 756));
  shape["shape"] = {1, 1, 28, 27};
  json outputs = json::parse(json_body(one, 1));
  outputs["outputs"] = {{{"name", "secret_layer"}}};
  const auto [bin, bin_head] = binary_body(one, 1);
  const std::string big(static_cast<size_t>(kMaxBodyBytes) * 3 / 2, ' ');
  const std::string t = w.infer_token, infer = "/v2/models/good/infer";
  return {
      {"invalid/malformed-json", "POST", infer, t, R"({"inputs":[{"name":"input",)", {}, 400, "not valid JSON"},
      {"invalid/wrong-shape", "POST", infer, t, body_with(shape), {}, 400, "shape"},
      {"invalid/wrong-datatype", "POST", infer, t, body_with(in(1, one, "INT64")), {}, 400, "datatype"},
      {"invalid/value-count", "POST", infer, t, body_with(in(1, std::vector<float>(700, 0.5f))), {}, 400, "700"},
      {"invalid/out-of-range", "POST", infer, t, body_with(in(1, std::vector<float>(kValues, 2.0f))), {}, 400, "range"},
      {"invalid/unknown-output", "POST", infer, t, outputs.dump(), {}, 400, "secret_layer"},
      {"invalid/unknown-model", "POST", "/v2/models/nope-{n}/infer", t, json_body(one, 1), {}, 404, "nope-"},
      {"invalid/unknown-version",
       "POST",
       "/v2/models/good/versions/999999/infer",
       t,
       json_body(one, 1),
       {},
       404,
       "version"},
      {"invalid/binary-header-not-a-number",
       "POST",
       infer,
       t,
       bin,
       {{"Inference-Header-Content-Length", "abc"}},
       400,
       "Inference-Header-Content-Length"},
      {"invalid/binary-header-past-end",
       "POST",
       infer,
       t,
       bin,
       {{"Inference-Header-Content-Length", "999999"}},
       400,
       "Inference-Header-Content-Length"},
      {"invalid/unknown-route", "GET", "/v2/nothing-{n}", t, "", {}, 404, "no route"},
      {"oversized/too-many-rows",
       "POST",
       infer,
       t,
       json_body(image_values(kMaxBatch + 1, rng), kMaxBatch + 1),
       {},
       400,
       "rows"},
      {"oversized/values-past-shape",
       "POST",
       infer,
       t,
       body_with(in(1, std::vector<float>(static_cast<size_t>(kMaxBatch) * kValues + 4096, 0.5f))),
       {},
       400,
       "values"},
      {"oversized/body-over-limit", "POST", infer, t, big, {}, 413, "max-body-bytes"},
  };
}

// No token, a wrong one, a malformed header, or a token without the role; names the server never
// served, some not even UTF-8. 401 (with WWW-Authenticate) or 403, and no metric series.
std::vector<HttpCase> unauth_http_cases(const Workspace& w, std::mt19937_64& rng) {
  const auto body = json_body(image_values(1, rng), 1);
  const std::string wrong = "wrong-" + w.infer_token;
  return {
      {"unauth/no-token", "POST", "/v2/models/ghost-{n}/infer", "", "{", {}, 401, "token"},
      {"unauth/wrong-token", "POST", "/v2/models/ghost-{n}/infer", wrong, body, {}, 401, "token"},
      {"unauth/not-utf8-name", "POST", "/v2/models/%FF%FEghost-{n}/infer", "", "{", {}, 401, "token"},
      {"unauth/ghost-version", "POST", "/v2/models/good/versions/ghost-{n}/infer", wrong, body, {}, 401, "token"},
      {"unauth/basic-auth",
       "POST",
       "/v2/models/good/infer",
       "",
       body,
       {{"Authorization", "Basic Z2hvc3Q6eA=="}},
       401,
       "Bearer"},
      {"unauth/metadata", "GET", "/v2/models/ghost-{n}", "", "", {}, 401, "token"},
      {"unauth/load-without-admin",
       "POST",
       "/v2/repository/models/ghost-{n}/load",
       w.infer_token,
       R"({"parameters":{"path":"good-a.pt"}})",
       {},
       403,
       "admin"},
      {"unauth/index-no-token", "POST", "/v2/repository/index", "", "", {}, 401, "token"},
  };
}

// --- clients: each loops until stop_load ---

void valid_rest(Soak& s, Tally& t, int index) {
  std::mt19937_64 rng(s.seed * 1000 + static_cast<uint64_t>(index));
  struct Body {
    std::string text;
    size_t binary_head = 0;  // 0: JSON
  };
  std::vector<Body> bodies;
  for (int i = 0; i < 16; ++i) {
    const int rows = 1 + static_cast<int>(rng() % 4);
    const auto v = image_values(rows, rng);
    if (i % 2) {
      auto [text, head] = binary_body(v, rows);
      bodies.push_back({std::move(text), head});
    } else {
      bodies.push_back({json_body(v, rows), 0});
    }
  }
  auto c = s.http(s.ws.infer_token);
  for (uint64_t i = 0; !s.stop_load; ++i) {
    const auto& b = bodies[i % bodies.size()];
    const std::string kind = b.binary_head ? "valid/rest-binary" : "valid/rest-json";
    const auto t0 = Clock::now();
    const httplib::Headers binary{{"Inference-Header-Content-Length", std::to_string(b.binary_head)}};
    const auto r = b.binary_head ? c.Post("/v2/models/good/infer", binary, b.text, "application/octet-stream")
                                 : c.Post("/v2/models/good/infer", b.text, "application/json");
    const float ms = static_cast<float>(since_s(t0) * 1e3);
    if (!r) {
      s.record(t, kind, "transport " + httplib::to_string(r.error()), Verdict::kFailed);
    } else if (r->status == 200 && contains(r->body, "\"outputs\"")) {
      t.latency_ms.push_back(ms);
      s.record(t, kind, "200", Verdict::kExpected);
    } else if (r->status == 503) {  // queue full (this token has no rate limit: a 429 would be a failure)
      s.record(t, kind, "503", Verdict::kRefused, r->body);
    } else {
      s.record(t, kind, std::to_string(r->status), Verdict::kFailed, r->body);
    }
  }
}

void valid_grpc(Soak& s, Tally& t, int index) {
  std::mt19937_64 rng(s.seed * 1000 + 100 + static_cast<uint64_t>(index));
  std::vector<inference::ModelInferRequest> requests;
  for (int i = 0; i < 16; ++i) {
    const int rows = 1 + static_cast<int>(rng() % 4);
    requests.push_back(grpc_request("good", image_values(rows, rng), rows));
  }
  auto stub = s.grpc();
  for (uint64_t i = 0; !s.stop_load; ++i) {
    grpc::ClientContext ctx;
    set_call(ctx, s.ws.infer_token);
    inference::ModelInferResponse r;
    const auto t0 = Clock::now();
    const auto st = stub->ModelInfer(&ctx, requests[i % requests.size()], &r);
    const float ms = static_cast<float>(since_s(t0) * 1e3);
    if (st.ok() && r.outputs_size() > 0) {
      t.latency_ms.push_back(ms);
      s.record(t, "valid/grpc", "OK", Verdict::kExpected);
    } else {
      const bool refused = st.error_code() == grpc::UNAVAILABLE;  // queue full
      s.record(t, "valid/grpc", code_name(st.error_code()), refused ? Verdict::kRefused : Verdict::kFailed,
               st.error_message());
    }
  }
}

// Hostile REST: the cases in turn; unauthenticated floods open a fresh connection now and then.
void hostile_rest(Soak& s, Tally& t, std::vector<HttpCase> cases, bool fresh_connections) {
  auto c = s.http("");
  std::string previous = "none";
  for (uint64_t i = 0; !s.stop_load; ++i) {
    const auto& k = cases[i % cases.size()];
    auto path = k.path;
    replace_all(path, "{n}", std::to_string(i));
    if (fresh_connections && i % 16 == 0) {
      auto fresh = s.http("");
      check_http(s, t, k, send(fresh, k, path), "none (a fresh connection)");
    } else {
      check_http(s, t, k, send(c, k, path), previous);
      previous = k.kind;
    }
  }
}

struct GrpcCase {
  std::string kind;
  std::function<grpc::Status(inference::GRPCInferenceService::Stub&, uint64_t)> call;
  grpc::StatusCode want;
  std::string names;
};

std::vector<GrpcCase> hostile_grpc_cases(const Soak& s, std::mt19937_64& rng) {
  const auto one = image_values(1, rng);
  const auto rows = image_values(kMaxBatch + 1, rng);
  const auto big = image_values(kMaxBodyBytes / 4 / kValues * 3 / 2, rng);
  const std::string t = s.ws.infer_token, wrong = "wrong-" + s.ws.infer_token;
  auto infer = [](const std::string& token, inference::ModelInferRequest q) {
    return [token, q](inference::GRPCInferenceService::Stub& stub, uint64_t n) {
      auto mine = q;
      auto name = mine.model_name();
      replace_all(name, "{n}", std::to_string(n));
      mine.set_model_name(name);
      grpc::ClientContext ctx;
      set_call(ctx, token);
      inference::ModelInferResponse r;
      return stub.ModelInfer(&ctx, mine, &r);
    };
  };
  auto shape = grpc_request("good", one, 1);
  shape.mutable_inputs(0)->set_shape(3, 27);
  shape.mutable_raw_input_contents(0)->resize(28 * 27 * 4);  // consistent: only the shape is wrong
  auto raw = grpc_request("good", one, 1);
  raw.mutable_raw_input_contents(0)->resize(100);
  auto datatype = grpc_request("good", one, 1);
  datatype.mutable_inputs(0)->set_datatype("BYTES");
  return {
      {"invalid-grpc/wrong-shape", infer(t, shape), grpc::INVALID_ARGUMENT, "shape"},
      {"invalid-grpc/raw-size", infer(t, raw), grpc::INVALID_ARGUMENT, "raw_input_contents"},
      {"invalid-grpc/wrong-datatype", infer(t, datatype), grpc::INVALID_ARGUMENT, "datatype"},
      {"invalid-grpc/unknown-model", infer(t, grpc_request("nope-{n}", one, 1)), grpc::NOT_FOUND, "nope-"},
      {"oversized-grpc/too-many-rows", infer(t, grpc_request("good", rows, kMaxBatch + 1)), grpc::INVALID_ARGUMENT,
       "rows"},
      {"oversized-grpc/message-over-limit", infer(t, grpc_request("good", big, static_cast<int>(big.size() / kValues))),
       grpc::RESOURCE_EXHAUSTED, "larger than max"},
      {"unauth-grpc/no-token", infer("", grpc_request("ghost-{n}", one, 1)), grpc::UNAUTHENTICATED, "token"},
      {"unauth-grpc/wrong-token", infer(wrong, grpc_request("ghost-{n}", one, 1)), grpc::UNAUTHENTICATED, "token"},
      {"unauth-grpc/load-without-admin",
       [t](inference::GRPCInferenceService::Stub& stub, uint64_t n) {
         grpc::ClientContext ctx;
         set_call(ctx, t);
         inference::RepositoryModelLoadRequest q;
         q.set_model_name("ghost-" + std::to_string(n));
         inference::RepositoryModelLoadResponse r;
         return stub.RepositoryModelLoad(&ctx, q, &r);
       },
       grpc::PERMISSION_DENIED, "admin"},
      {"unauth-grpc/metadata-no-token",
       [](inference::GRPCInferenceService::Stub& stub, uint64_t n) {
         grpc::ClientContext ctx;
         set_call(ctx, "");
         inference::ModelMetadataRequest q;
         q.set_name("ghost-" + std::to_string(n));
         inference::ModelMetadataResponse r;
         return stub.ModelMetadata(&ctx, q, &r);
       },
       grpc::UNAUTHENTICATED, "token"},
  };
}

void hostile_grpc(Soak& s, Tally& t, int index) {
  std::mt19937_64 rng(s.seed * 1000 + 200 + static_cast<uint64_t>(index));
  const auto cases = hostile_grpc_cases(s, rng);
  auto stub = s.grpc();
  for (uint64_t i = 0; !s.stop_load; ++i) {
    // Two clients: the invalid/oversized half and the unauthenticated half of the list.
    const auto& k = cases[(index == 0 ? 0 : 6) + i % (index == 0 ? 6 : cases.size() - 6)];
    const auto st = k.call(*stub, i);
    const std::string code = code_name(st.error_code());
    if (st.error_code() != k.want)
      s.record(t, k.kind, code, Verdict::kFailed, st.error_message());
    else if (!contains(st.error_message(), k.names)) {
      s.record(t, k.kind, code + " not naming '" + k.names + "'", Verdict::kFailed, st.error_message());
    } else {
      s.record(t, k.kind, code, Verdict::kExpected);
    }
  }
}

// The model that throws, alone on its batch thread (one client: a failing batch fails every
// request in it, so each batch must hold one request for passing inputs to be checked as 200).
void flaky(Soak& s, Tally& t) {
  std::mt19937_64 rng(s.seed * 1000 + 300);
  auto c = s.http(s.ws.infer_token);
  auto stub = s.grpc();
  for (uint64_t i = 0; !s.stop_load; ++i) {
    auto v = image_values(1, rng);
    const int trip = static_cast<int>(rng() % 4);  // 0, 1: passes; 2: raise; 3: error inside LibTorch
    if (trip >= 2) v[static_cast<size_t>(trip - 2)] = 1.0f;
    const std::string what = trip < 2 ? "pass" : trip == 2 ? "raise" : "aten-error";
    std::string kind, result, error;
    bool ok = false;
    if (i % 2 == 0) {
      kind = "flaky/rest-" + what;
      const auto r = c.Post("/v2/models/flaky/infer", json_body(v, 1), "application/json");
      result = r ? std::to_string(r->status) : "transport " + httplib::to_string(r.error());
      ok = r && r->status == (trip < 2 ? 200 : 500);
      error = r ? r->body : "";
    } else {
      kind = "flaky/grpc-" + what;
      grpc::ClientContext ctx;
      set_call(ctx, s.ws.infer_token);
      inference::ModelInferResponse r;
      const auto st = stub->ModelInfer(&ctx, grpc_request("flaky", v, 1), &r);
      result = code_name(st.error_code());
      ok = st.error_code() == (trip < 2 ? grpc::OK : grpc::INTERNAL);
      error = st.error_message();
    }
    if (ok && trip >= 2) {
      for (const auto& leak : kLeaks) {
        if (contains(error, leak)) {
          ok = false;
          result += " leaking '" + leak + "'";
          break;
        }
      }
      if (ok && !contains(error, "internal error")) ok = false, result += " not generic";
    }
    s.record(t, kind, result, ok ? Verdict::kExpected : Verdict::kFailed, error);
  }
}

// Over twice its token's rate (an inference, then metadata reads: the rate counts requests, and
// the reads are quick): 200, or 429 with Retry-After.
void rate_limited(Soak& s, Tally& t) {
  std::mt19937_64 rng(s.seed * 1000 + 400);
  const auto body = json_body(image_values(1, rng), 1);
  auto c = s.http(s.ws.limited_token);
  auto check = [&](const std::string& kind, const httplib::Result& r) {
    if (!r)
      s.record(t, kind, "transport " + httplib::to_string(r.error()), Verdict::kFailed);
    else if (r->status == 200)
      s.record(t, kind, "200", Verdict::kExpected);
    else if (r->status == 429 && !r->get_header_value("Retry-After").empty()) {
      s.record(t, kind, "429 with Retry-After", Verdict::kExpected);
    } else if (r->status == 503 && kind == "rate-limited/rest-infer") {
      s.record(t, kind, "503", Verdict::kRefused, r->body);
    } else {
      s.record(t, kind, std::to_string(r->status), Verdict::kFailed, r->body);
    }
  };
  while (!s.stop_load) {
    const auto t0 = Clock::now();
    check("rate-limited/rest-infer", c.Post("/v2/models/good/infer", body, "application/json"));
    while (!s.stop_load && since_s(t0) < 0.25) {
      check("rate-limited/rest-metadata", c.Get("/v2/models/good"));
      std::this_thread::sleep_for(std::chrono::duration<double>(0.4 / kLimitedRatePerS));
    }
  }
}

// Every kSwapEveryS: SIGHUP with the live file rewritten, or an admin load of the other variant,
// in turn; each must give the model a new version. /metrics is scraped each time too.
void swapper(Soak& s, Tally& t) {
  auto c = s.http(s.ws.admin_token);
  auto version = [&c]() -> std::string {
    const auto r = c.Get("/v2/models/good");
    const auto j = r && r->status == 200 ? json::parse(r->body, nullptr, false) : json();
    const bool ok = j.is_object() && j.contains("versions") && j["versions"].is_array() && !j["versions"].empty() &&
                    j["versions"][0].is_string();
    return ok ? j["versions"][0].get<std::string>() : "";
  };
  auto next = Clock::now();
  for (int k = 0; !s.stop_load; ++k) {
    next += std::chrono::seconds(kSwapEveryS);
    while (!s.stop_load && Clock::now() < next) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    if (s.stop_load) break;
    const auto before = version();
    const std::string variant = (k / 2) % 2 ? "good-a.pt" : "good-b.pt";
    std::string kind, result, detail;
    bool ok = false;
    if (k % 2 == 0) {
      kind = "swap/sighup";
      fs::copy_file(s.ws.file(variant), s.ws.live() + ".tmp", fs::copy_options::overwrite_existing);
      fs::rename(s.ws.live() + ".tmp", s.ws.live());
      s.server->signal(SIGHUP);
      const auto t0 = Clock::now();
      std::string now = before;
      while (now == before && since_s(t0) < kSwapEveryS - 1) {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
        now = version();
      }
      ok = now != before && !now.empty();
      result = ok ? "new version" : "version unchanged after " + std::to_string(kSwapEveryS - 1) + " s";
      detail = before + " -> " + now;
    } else {
      kind = "swap/admin-load";
      const auto r = c.Post("/v2/repository/models/good/load", json{{"parameters", {{"path", variant}}}}.dump(),
                            "application/json");
      result = r ? std::to_string(r->status) : "transport " + httplib::to_string(r.error());
      ok = r && r->status == 200 && version() != before;
      detail = r ? r->body : "";
    }
    if (ok) ++s.swaps;
    s.record(t, kind, result, ok ? Verdict::kExpected : Verdict::kFailed, detail);
    const auto m = c.Get("/metrics");
    s.record(t, "metrics/scrape", m ? std::to_string(m->status) : "transport",
             m && m->status == 200 ? Verdict::kExpected : Verdict::kFailed);
  }
}

// --- slow clients: raw sockets, a byte a second or nothing at all ---

int connect_loopback(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    const int e = errno;
    ::close(fd);
    errno = e;
    return -1;
  }
  return fd;
}

bool send_all(int fd, const std::string& bytes) {
  for (size_t off = 0; off < bytes.size();) {
    const auto n = ::send(fd, bytes.data() + off, bytes.size() - off, MSG_NOSIGNAL);
    if (n <= 0) return false;
    off += static_cast<size_t>(n);
  }
  return true;
}

enum class Slow { kHeaders, kBody, kIdle };

// Connects, sends its prefix, then a byte a second (or nothing); records how the connection ended
// and reconnects. The server may close it or answer 4xx; what matters is that valid traffic goes on.
void slow_client(Soak& s, Tally& t, Slow mode) {
  const std::string kind = mode == Slow::kHeaders ? "slow/header-byte-per-s"
                           : mode == Slow::kBody  ? "slow/body-byte-per-s"
                                                  : "slow/idle-connection";
  const std::string prefix = mode == Slow::kHeaders ? "POST /v2/models/good/infer HTTP/1.1\r\nHost: soak\r\nX-Slow: "
                             : mode == Slow::kBody
                                 ? "POST /v2/models/good/infer HTTP/1.1\r\nHost: soak\r\nAuthorization: Bearer " +
                                       s.ws.infer_token +
                                       "\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
                                 : "";
  double longest_s = 0;
  while (!s.stop_slow) {
    const int fd = connect_loopback(s.http_port);
    if (fd < 0) {
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
      continue;
    }
    const auto t0 = Clock::now();
    bool open = send_all(fd, prefix);
    std::string answer;
    while (open && !s.stop_slow) {
      pollfd p{fd, POLLIN, 0};
      if (::poll(&p, 1, 1000) > 0) {
        char buf[4096];
        const auto n = ::recv(fd, buf, sizeof buf, 0);
        if (n <= 0)
          open = false;
        else
          answer.append(buf, static_cast<size_t>(n));
        continue;
      }
      if (mode != Slow::kIdle && !send_all(fd, mode == Slow::kHeaders ? "a" : " ")) open = false;
    }
    ::close(fd);
    const int64_t now_ns = Clock::now().time_since_epoch().count();
    if (!open && s.sigterm_ns != 0) s.slow_closed_after_sigterm_ns = now_ns;
    const double held = since_s(t0);
    longest_s = std::max(longest_s, held);
    const bool answered = answer.rfind("HTTP/1.1 ", 0) == 0;
    const std::string status = answered ? answer.substr(9, 3) : "";
    const std::string result = open ? "held until the end" : answered ? "answered " + status : "closed by the server";
    s.record(t, kind, result, answered && status[0] == '5' ? Verdict::kFailed : Verdict::kExpected,
             "held " + std::to_string(held) + " s");
  }
  s.record(t, kind + " (longest hold)", std::to_string(static_cast<int>(longest_s)) + " s", Verdict::kExpected);
}

// --- after the load: metric labels, then the drain ---

struct MetricsReport {
  size_t series = 0;
  std::vector<std::string> offending;  // lines with a label value no client should have been able to set
};

MetricsReport check_metrics(const std::string& text) {
  static const std::set<std::string> kModels = {"good", "flaky", "unknown"};
  MetricsReport out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    ++out.series;
    bool bad = contains(line, "ghost") || contains(line, "nope-") || contains(line, "\xEF\xBF\xBD");
    for (size_t at = line.find("model=\""); at != std::string::npos; at = line.find("model=\"", at + 1)) {
      const auto end = line.find('"', at + 7);
      bad = bad || !kModels.count(line.substr(at + 7, end - at - 7));
    }
    for (size_t at = line.find("version=\""); at != std::string::npos; at = line.find("version=\"", at + 1)) {
      const auto v = line.substr(at + 9, line.find('"', at + 9) - at - 9);
      bad = bad || v.find_first_not_of("0123456789") != std::string::npos;
    }
    if (bad && out.offending.size() < 10) out.offending.push_back(line);
  }
  return out;
}

size_t series_now(const Soak& s) {
  httplib::Client c("127.0.0.1", s.http_port);
  const auto m = c.Get("/metrics");
  return m && m->status == 200 ? check_metrics(m->body).series : 0;
}

struct DrainReport {
  std::optional<int> exit_code;
  double exit_s = 0, bound_s = 0;
  double last_slow_closed_s = -1;  // after SIGTERM: when the server ended its last slow connection
  int in_flight_at_sigterm = 0;    // probes sent before SIGTERM and answered after it
};

// A request on a fresh connection, answered in full, refused (503, connection refused, or
// reset before a byte came back: never admitted), or cut off mid-response (a failure).
std::string drain_probe_rest(int port, const std::string& request, Verdict& v) {
  const int fd = connect_loopback(port);
  if (fd < 0) {
    v = errno == ECONNREFUSED ? Verdict::kRefused : Verdict::kFailed;
    return "connect: " + std::string(std::strerror(errno));
  }
  const bool sent = send_all(fd, request);
  std::string answer;
  char buf[16384];
  for (;;) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 30000) <= 0) break;
    const auto n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    answer.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  v = Verdict::kFailed;
  if (answer.empty()) {
    v = Verdict::kRefused;
    return sent ? "closed before a byte of answer" : "reset while sending, no answer";
  }
  const auto head_end = answer.find("\r\n\r\n");
  const auto cl = answer.find("Content-Length: ");
  if (answer.rfind("HTTP/1.1 ", 0) != 0 || head_end == std::string::npos || cl == std::string::npos) {
    return "cut off mid-response";
  }
  const size_t length = std::stoul(answer.substr(cl + 16));
  if (answer.size() - head_end - 4 < length) return "cut off mid-response";
  const auto status = answer.substr(9, 3);
  if (status == "200") v = Verdict::kExpected;
  if (status == "503") v = Verdict::kRefused;
  return status;
}

// SIGTERM while 8-row requests stream in on 4 REST and 4 gRPC clients (64 rows: they fit the
// queue, so most are admitted); the slow clients stay connected.
DrainReport drain(Soak& s, std::vector<Tally>& tallies) {
  constexpr int kRows = kMaxQueue / 8;
  std::mt19937_64 rng(s.seed * 1000 + 500);
  const auto values = image_values(kRows, rng);
  const auto body = json_body(values, kRows);
  const std::string request = "POST /v2/models/good/infer HTTP/1.1\r\nHost: soak\r\nAuthorization: Bearer " +
                              s.ws.infer_token + "\r\nContent-Type: application/json\r\nConnection: close\r\n" +
                              "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
  const auto grpc_q = grpc_request("good", values, kRows);
  std::atomic<bool> gone{false};
  auto& sigterm_ns = s.sigterm_ns;
  std::atomic<int> in_flight{0};
  auto ns_now = [] { return Clock::now().time_since_epoch().count(); };
  auto note = [&](int64_t started) {
    const auto t = sigterm_ns.load();
    if (t != 0 && started < t) ++in_flight;
  };
  std::vector<std::thread> probes;
  tallies.resize(8);
  for (int i = 0; i < 8; ++i) {
    probes.emplace_back([&, i] {
      auto& t = tallies[static_cast<size_t>(i)];
      auto stub = s.grpc();
      while (!gone) {
        const auto started = ns_now();
        Verdict v;
        if (i < 4) {
          const auto result = drain_probe_rest(s.http_port, request, v);
          s.record(t, "drain/rest", result, v);
          if (result.rfind("connect", 0) == 0) break;  // the listener is closed: nothing more to see
        } else {
          grpc::ClientContext ctx;
          set_call(ctx, s.ws.infer_token);
          inference::ModelInferResponse r;
          const auto st = stub->ModelInfer(&ctx, grpc_q, &r);
          // CANCELLED on a call sent after SIGTERM: gRPC's shutdown refusing it before any handler
          // ran (not the documented UNAVAILABLE, but nothing was cut off); before SIGTERM: dropped.
          std::string result = code_name(st.error_code());
          v = st.ok()                                ? Verdict::kExpected
              : st.error_code() == grpc::UNAVAILABLE ? Verdict::kRefused
                                                     : Verdict::kFailed;
          if (st.error_code() == grpc::CANCELLED) {
            const bool after = sigterm_ns != 0 && started >= sigterm_ns;
            result += after ? " (sent after SIGTERM)" : " (sent before SIGTERM)";
            if (after) v = Verdict::kRefused;
          }
          s.record(t, "drain/grpc", result, v, st.error_message());
          if (!st.ok() && sigterm_ns != 0) std::this_thread::sleep_for(std::chrono::milliseconds(20));
        }
        if (v != Verdict::kRefused) note(started);
      }
    });
  }
  std::this_thread::sleep_for(std::chrono::seconds(1));
  DrainReport d;
  d.bound_s = std::max(kHttpReadBoundS, kRequestTimeoutMs / 1000) + kDrainTimeoutMs / 1000.0 + 2;
  const auto t0 = Clock::now();
  sigterm_ns = ns_now();
  s.server->signal(SIGTERM);
  d.exit_code = s.server->wait_exit(d.bound_s);
  d.exit_s = since_s(t0);
  if (!d.exit_code) d.exit_code = s.server->wait_exit(60);  // report how long it really took, up to a minute
  d.exit_s = since_s(t0);
  gone = true;
  for (auto& p : probes) p.join();
  if (s.slow_closed_after_sigterm_ns != 0) d.last_slow_closed_s = (s.slow_closed_after_sigterm_ns - sigterm_ns) / 1e9;
  d.in_flight_at_sigterm = in_flight;
  return d;
}

// --- the run, and its report ---

struct Results {
  uint64_t seed = 0;
  std::vector<std::string> server_args;
  double warmup_s = 0, load_s = 0;
  std::map<std::pair<std::string, std::string>, Count> counts;
  std::vector<float> rest_ms, grpc_ms;       // answered valid requests
  std::vector<std::pair<double, long>> rss;  // (s since the load began, KiB), every kRssEveryS after the warm-up
  std::vector<std::pair<double, long>> rss_anon, rss_file;  // its parts, sampled with it
  size_t series_start = 0;
  std::optional<MetricsReport> metrics;  // none: /metrics did not answer
  int swaps = 0;
  DrainReport drain;
};

struct Criterion {
  std::string name;
  bool pass;
  std::string detail;
};

void merge(const Tally& t, Results& r, std::vector<float>* latency) {
  for (const auto& [key, c] : t.counts) {
    auto& m = r.counts[key];
    if (m.n == 0) m.verdict = c.verdict, m.sample = c.sample;
    m.n += c.n;
  }
  if (latency) latency->insert(latency->end(), t.latency_ms.begin(), t.latency_ms.end());
}

bool is_note(const std::string& kind) { return contains(kind, "(longest hold)"); }  // not a request

double rss_window_s(const Results& r) {
  return r.rss.empty() ? 0 : std::min<double>(kRssWindowS, (r.rss.back().first - r.rss.front().first) / 4);
}

// Medians of the samples (r.rss, or one of its parts) in the first and in the last rss_window_s()
// of the measured load.
std::pair<long, long> rss_start_end(const Results& r, const std::vector<std::pair<double, long>>* samples = nullptr) {
  const auto& series = samples ? *samples : r.rss;
  auto median = [&series](double from_s, double to_s) {
    std::vector<long> v;
    for (const auto& [t, kib] : series) {
      if (t >= from_s - 1e-6 && t <= to_s + 1e-6) v.push_back(kib);
    }
    if (v.empty()) return 0L;
    std::nth_element(v.begin(), v.begin() + static_cast<long>(v.size() / 2), v.end());
    return v[v.size() / 2];
  };
  if (series.empty()) return {0, 0};
  const double first = series.front().first, last = series.back().first;
  return {median(first, first + rss_window_s(r)), median(last - rss_window_s(r), last)};
}

std::vector<Criterion> judge(const Results& r) {
  uint64_t valid = 0, hostile = 0, drained = 0, swaps = 0;
  for (const auto& [key, c] : r.counts) {
    if (c.verdict != Verdict::kFailed || is_note(key.first)) continue;
    const auto& kind = key.first;
    if (kind.rfind("valid/", 0) == 0 || contains(kind, "-pass"))
      valid += c.n;
    else if (kind.rfind("drain/", 0) == 0)
      drained += c.n;
    else if (kind.rfind("swap/", 0) == 0)
      swaps += c.n;
    else
      hostile += c.n;
  }
  const auto [start, end] = rss_start_end(r);
  const double growth = 100.0 * static_cast<double>(end - start) / static_cast<double>(std::max(1L, start));
  const auto& d = r.drain;
  char rss[96], drain[160];
  std::snprintf(rss, sizeof rss, "%.1f -> %.1f MiB, %+.2f %%", start / 1024.0, end / 1024.0, growth);
  std::snprintf(drain, sizeof drain, "exit %s after %.2f s (bound %.0f s), %llu probes dropped or failed",
                d.exit_code ? std::to_string(*d.exit_code).c_str() : "none", d.exit_s, d.bound_s,
                static_cast<unsigned long long>(drained));
  return {
      {"0 failed valid requests", valid == 0,
       std::to_string(valid) + " failed (valid REST/gRPC, and passing inputs to the flaky model)"},
      {"hostile requests get their documented 4xx (flaky: a generic 500)", hostile == 0,
       std::to_string(hostile) + " unexpected answers"},
      {"RSS growth < 5 %", start > 0 && growth < 5.0, rss},
      {"no metric series from unauthenticated or made-up names", r.metrics && r.metrics->offending.empty(),
       r.metrics ? std::to_string(r.metrics->offending.size()) + " offending series" : "/metrics did not answer"},
      {"a hot swap every 5 s, each applied", swaps == 0 && r.swaps > 0,
       std::to_string(r.swaps) + " swaps, " + std::to_string(swaps) + " failed"},
      {"drains cleanly on SIGTERM", d.exit_code == 0 && d.exit_s <= d.bound_s && drained == 0, drain},
  };
}

std::string one_line(std::string s, size_t n) {
  replace_all(s, "\n", " ");
  replace_all(s, "|", "/");
  return s.substr(0, n);
}

void print_report(const Results& r, const std::vector<Criterion>& criteria) {
  std::map<std::string, std::array<uint64_t, 3>> by_kind;  // expected, refused, failed
  uint64_t total = 0;
  for (const auto& [key, c] : r.counts) {
    if (is_note(key.first)) continue;
    by_kind[key.first][static_cast<int>(c.verdict)] += c.n;
    total += c.n;
  }
  auto u = [](uint64_t v) { return static_cast<unsigned long long>(v); };
  std::printf(
      "\n| kind | requests | expected | refused 429/503 (documented) | failed / unexpected |\n"
      "| --- | --- | --- | --- | --- |\n");
  for (const auto& [kind, n] : by_kind) {
    std::printf("| %s | %llu | %llu | %llu | %llu |\n", kind.c_str(), u(n[0] + n[1] + n[2]), u(n[0]), u(n[1]), u(n[2]));
  }
  std::printf(
      "\nanswers by kind:\n| kind | result | count | verdict | first detail |\n| --- | --- | --- | --- | --- |\n");
  for (const auto& [key, c] : r.counts) {
    const bool show = c.verdict != Verdict::kExpected || key.first.rfind("slow/", 0) == 0;
    std::printf("| %s | %s | %llu | %s | %s |\n", key.first.c_str(), key.second.c_str(), u(c.n), to_string(c.verdict),
                show ? one_line(c.sample, 120).c_str() : "");
  }
  std::printf(
      "\nvalid requests answered 200/OK over %.0f s:\n| protocol | answered | req/s | p50 ms | p99 ms |\n"
      "| --- | --- | --- | --- | --- |\n",
      r.load_s);
  for (const auto& [name, ms] : {std::pair{"REST", &r.rest_ms}, std::pair{"gRPC", &r.grpc_ms}}) {
    std::printf("| %s | %zu | %.0f | %.2f | %.2f |\n", name, ms->size(), ms->size() / r.load_s, percentile(*ms, 0.5),
                percentile(*ms, 0.99));
  }
  std::printf("\nserver RSS (MiB, s since the load began; sampled every %d s, shown every %d s):", kRssEveryS,
              kProgressEveryS);
  for (size_t i = 0; i < r.rss.size(); ++i) {
    if (i % (kProgressEveryS / kRssEveryS) == 0 || i + 1 == r.rss.size()) {
      std::printf(" %.0f=%.1f", r.rss[i].first, r.rss[i].second / 1024.0);
    }
  }
  const auto [rss_start, rss_end] = rss_start_end(r);
  std::printf(
      "\nRSS start %.1f MiB (median of the first %.0f s after a %.0f s warm-up), end %.1f MiB (median of "
      "the last %.0f s)\n",
      rss_start / 1024.0, rss_window_s(r), r.warmup_s, rss_end / 1024.0, rss_window_s(r));
  const auto anon = rss_start_end(r, &r.rss_anon), file = rss_start_end(r, &r.rss_file);
  std::printf("  of which RssAnon (heap, stacks) %.1f -> %.1f MiB, RssFile (mapped files) %.1f -> %.1f MiB\n",
              anon.first / 1024.0, anon.second / 1024.0, file.first / 1024.0, file.second / 1024.0);
  std::printf("metric series: %zu after the warm-up, %zu at the end (each swap's new version adds series)\n",
              r.series_start, r.metrics ? r.metrics->series : 0);
  const auto& d = r.drain;
  std::printf(
      "drain: SIGTERM -> %s after %.2f s (bound %.0f s); probes in flight at SIGTERM, answered: %d; "
      "last slow connection ended by the server %.2f s after SIGTERM\n",
      d.exit_code ? ("exit " + std::to_string(*d.exit_code)).c_str() : "still running (killed)", d.exit_s, d.bound_s,
      d.in_flight_at_sigterm, d.last_slow_closed_s);
  std::printf("requests: %llu in %.0f s (%.0f/s), seed %llu\n\n", u(total), r.load_s, total / r.load_s, u(r.seed));
  for (const auto& c : criteria)
    std::printf("%s  %s (%s)\n", c.pass ? "PASS" : "FAIL", c.name.c_str(), c.detail.c_str());
  if (r.metrics) {
    for (const auto& l : r.metrics->offending) std::printf("  offending series: %s\n", l.c_str());
  }
}

json to_json(const Results& r, const std::vector<Criterion>& criteria) {
  json kinds = json::array(), rss = json::array(), crit = json::array();
  for (const auto& [key, c] : r.counts) {
    kinds.push_back({{"kind", key.first},
                     {"result", key.second},
                     {"count", c.n},
                     {"verdict", to_string(c.verdict)},
                     {"sample", c.sample}});
  }
  for (const auto& [t, kib] : r.rss) rss.push_back({{"t_s", t}, {"kib", kib}});
  bool pass = true;
  for (const auto& c : criteria) {
    crit.push_back({{"name", c.name}, {"pass", c.pass}, {"detail", c.detail}});
    pass = pass && c.pass;
  }
  auto latency = [](const std::vector<float>& ms) {
    return json{{"answered", ms.size()}, {"p50", percentile(ms, 0.5)}, {"p99", percentile(ms, 0.99)}};
  };
  const auto& d = r.drain;
  return {{"seed", r.seed},
          {"seconds", r.load_s},
          {"server_args", r.server_args},
          {"kinds", kinds},
          {"latency_ms", {{"rest", latency(r.rest_ms)}, {"grpc", latency(r.grpc_ms)}}},
          {"rss_kib",
           {{"warmup_s", r.warmup_s},
            {"window_s", rss_window_s(r)},
            {"start", rss_start_end(r).first},
            {"end", rss_start_end(r).second},
            {"anon_start", rss_start_end(r, &r.rss_anon).first},
            {"anon_end", rss_start_end(r, &r.rss_anon).second},
            {"file_start", rss_start_end(r, &r.rss_file).first},
            {"file_end", rss_start_end(r, &r.rss_file).second},
            {"samples", rss}}},
          {"metrics",
           {{"series_start", r.series_start},
            {"series_end", r.metrics ? r.metrics->series : 0},
            {"offending", r.metrics ? r.metrics->offending : std::vector<std::string>{}}}},
          {"swaps", r.swaps},
          {"drain",
           {{"exit_code", d.exit_code ? json(*d.exit_code) : json(nullptr)},
            {"seconds", d.exit_s},
            {"bound_s", d.bound_s},
            {"in_flight_at_sigterm", d.in_flight_at_sigterm},
            {"last_slow_closed_s", d.last_slow_closed_s}}},
          {"criteria", crit},
          {"pass", pass}};
}

// Runs the load for `seconds` against a started server; samples RSS; stops the load, checks the
// metric labels and drains.
Results soak(Soak& s, double seconds) {
  Results r;
  r.seed = s.seed;
  r.warmup_s = std::clamp(seconds / 10, 5.0, 60.0);  // allocator arenas, TorchScript profiling, connections
  // 8 + 8 valid; hostile: REST invalid/oversized, REST unauthenticated, gRPC invalid/oversized,
  // gRPC unauthenticated; flaky; rate-limited; swapper; 4 slow.
  constexpr int kRest = 8, kGrpc = 8;
  std::vector<Tally> tallies(kRest + kGrpc + 11);
  std::vector<std::thread> load, slow;
  std::mt19937_64 rng(s.seed);
  size_t k = 0;
  for (int i = 0; i < kRest; ++i) load.emplace_back(valid_rest, std::ref(s), std::ref(tallies[k++]), i);
  for (int i = 0; i < kGrpc; ++i) load.emplace_back(valid_grpc, std::ref(s), std::ref(tallies[k++]), i);
  load.emplace_back(hostile_rest, std::ref(s), std::ref(tallies[k++]), invalid_http_cases(s.ws, rng), false);
  load.emplace_back(hostile_rest, std::ref(s), std::ref(tallies[k++]), unauth_http_cases(s.ws, rng), true);
  for (int i = 0; i < 2; ++i) load.emplace_back(hostile_grpc, std::ref(s), std::ref(tallies[k++]), i);
  load.emplace_back(flaky, std::ref(s), std::ref(tallies[k++]));
  load.emplace_back(rate_limited, std::ref(s), std::ref(tallies[k++]));
  load.emplace_back(swapper, std::ref(s), std::ref(tallies[k++]));
  for (const auto mode : {Slow::kHeaders, Slow::kBody, Slow::kIdle, Slow::kIdle}) {
    slow.emplace_back(slow_client, std::ref(s), std::ref(tallies[k++]), mode);
  }

  const auto t0 = Clock::now();
  auto sample_at = [&](double at_s) {
    std::this_thread::sleep_for(std::chrono::duration<double>(std::max(0.0, at_s - since_s(t0))));
    r.rss.emplace_back(at_s, s.server->rss_kib());
    r.rss_anon.emplace_back(at_s, s.server->status_kib("RssAnon"));
    r.rss_file.emplace_back(at_s, s.server->status_kib("RssFile"));
    if (r.rss.size() % (kProgressEveryS / kRssEveryS) != 1 && at_s < seconds) return;
    std::fprintf(stderr, "[soak %4.0f/%.0f s] requests %llu, failed %llu, swaps %d, server RSS %.1f MiB\n", at_s,
                 seconds, static_cast<unsigned long long>(s.live.requests.load()),
                 static_cast<unsigned long long>(s.live.failed.load()), s.swaps.load(), r.rss.back().second / 1024.0);
  };
  sample_at(r.warmup_s);
  r.series_start = series_now(s);
  for (double at = r.warmup_s + kRssEveryS; at < seconds; at += kRssEveryS) sample_at(at);
  sample_at(seconds);  // the end, still under load like the start
  r.load_s = since_s(t0);
  s.stop_load = true;
  for (auto& t : load) t.join();

  httplib::Client c("127.0.0.1", s.http_port);
  if (const auto m = c.Get("/metrics"); m && m->status == 200) r.metrics = check_metrics(m->body);
  std::vector<Tally> drain_tallies;
  r.drain = drain(s, drain_tallies);
  s.stop_slow = true;
  for (auto& t : slow) t.join();
  r.swaps = s.swaps;
  for (size_t i = 0; i < tallies.size(); ++i) {
    merge(tallies[i], r, i < kRest ? &r.rest_ms : i < kRest + kGrpc ? &r.grpc_ms : nullptr);
  }
  for (const auto& t : drain_tallies) merge(t, r, nullptr);
  return r;
}

struct SoakOptions {
  std::string binary, model;  // the bulwark binary; the good model's file, or "-" for a zoo cnn
  double seconds = 600;
  std::string out;  // results JSON; none when empty
  uint64_t seed = 1;
  bool keep = false;                    // keep the workspace even when every criterion passed
  std::vector<std::string> server_env;  // NAME=VALUE for the server process only
};

int run(const SoakOptions& o) {
  ::signal(SIGPIPE, SIG_IGN);
  Soak s;
  s.seed = o.seed;
  s.ws = make_workspace(o.model, o.seed);
  const auto args = server_args(s.ws);
  ServerProcess server(o.binary, args, s.ws.file("server.stderr"), o.server_env);
  s.server = &server;
  const auto line = server.first_line();
  if (line.empty()) {
    std::fprintf(stderr, "soak: the server did not start; its stderr is in %s\n", s.ws.file("server.stderr").c_str());
    return 1;
  }
  const auto ports = json::parse(line);
  s.http_port = ports["http_port"];
  s.grpc_port = ports["grpc_port"];
  std::printf("soak: %.0f s against %s (pid %d, REST %d, gRPC %d), seed %llu, workspace %s\n", o.seconds,
              o.binary.c_str(), server.pid(), s.http_port, s.grpc_port, static_cast<unsigned long long>(o.seed),
              s.ws.dir.c_str());
  for (const auto& e : o.server_env) std::printf("server environment: %s\n", e.c_str());
  std::fflush(stdout);

  auto r = soak(s, o.seconds);
  r.server_args = args;
  const auto criteria = judge(r);
  print_report(r, criteria);
  const bool pass = std::all_of(criteria.begin(), criteria.end(), [](const Criterion& c) { return c.pass; });
  if (!o.out.empty()) std::ofstream(o.out) << to_json(r, criteria).dump(2) << '\n';
  if (pass && !o.keep) {
    fs::remove_all(s.ws.dir);
  } else {
    std::printf("workspace kept: %s (server stderr: server.stderr)\n", s.ws.dir.c_str());
  }
  return pass ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  SoakOptions o;
  std::vector<std::string> pos;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--out" && i + 1 < argc)
      o.out = argv[++i];
    else if (a == "--seed" && i + 1 < argc)
      o.seed = std::stoull(argv[++i]);
    else if (a == "--server-env" && i + 1 < argc)
      o.server_env.push_back(argv[++i]);
    else if (a == "--keep")
      o.keep = true;
    else
      pos.push_back(a);
  }
  if (pos.size() > 2) o.seconds = std::atof(pos[2].c_str());
  const bool env_ok = std::all_of(o.server_env.begin(), o.server_env.end(),
                                  [](const std::string& e) { return e.find('=') != std::string::npos; });
  if (pos.size() < 2 || pos.size() > 3 || !(o.seconds >= 10) || !env_ok) {
    std::fprintf(stderr,
                 "usage: soak BULWARK_BINARY MODEL.pt|- [SECONDS>=10, default 600] [--out results.json] "
                 "[--seed N] [--keep] [--server-env NAME=VALUE]...\n");
    return 2;
  }
  o.binary = pos[0];
  o.model = pos[1];
  try {
    return run(o);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "soak: %s\n", e.what());
    return 1;
  }
}
