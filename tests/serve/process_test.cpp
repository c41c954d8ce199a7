// `bulwark serve` as a process: ports printed at start, config file, SIGHUP reload, SIGTERM drain.
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <future>
#include <regex>

#include "core/files.h"
#include "grpc_predict_v2.grpc.pb.h"
#include "grpc_request.h"
#include "server_fixture.h"
#include "server_process.h"

namespace bulwark::testing {
namespace {

using nlohmann::json;

TEST(ServeProcess, ConfigFilePortZeroSighupReloadAndSigtermDrain) {
  TempDir dir;
  const auto model_path = dir.file("live.pt");
  const auto a = write_model(dir, "a.pt", "mlp", 1), b = write_model(dir, "b.pt", "mlp", 2);
  std::filesystem::copy_file(a, model_path);
  const auto config = dir.file("serve.yaml");
  // A long queue delay keeps a request in flight long enough to send SIGTERM while it waits.
  std::ofstream(config) << "model:\n  fashion: " << model_path
                        << "\nhttp-port: 0\ngrpc-port: -1\nmax-batch: 64\nmax-queue-delay-us: 1500000\n"
                           "access-log: off\nallow-unsigned: true\n";
  ServerProcess p({"--json", "serve", "--config", config});
  const auto line = p.first_line();
  ASSERT_FALSE(line.empty()) << "server printed nothing";
  const auto info = json::parse(line);
  ASSERT_GT(info["http_port"].get<int>(), 0);
  EXPECT_EQ(info["grpc_port"], -1);
  httplib::Client c("127.0.0.1", info["http_port"].get<int>());
  c.set_read_timeout(30, 0);
  EXPECT_EQ(c.Get("/v2/health/ready")->status, 200);
  EXPECT_EQ(json::parse(c.Get("/v2/models/fashion")->body)["versions"][0], "1");

  // SIGHUP reloads the model from its path: a new version, with no restart.
  std::filesystem::copy_file(b, model_path, std::filesystem::copy_options::overwrite_existing);
  p.signal(SIGHUP);
  EXPECT_TRUE(eventually([&] {
    const auto r = c.Get("/v2/models/fashion");
    return r && json::parse(r->body)["versions"][0] == "2";
  }));
  // SIGHUP re-reads the config: a second model added there gets served.
  std::ofstream(config) << "model:\n  fashion: " << model_path << "\n  second: " << a
                        << "\nhttp-port: 0\ngrpc-port: -1\nmax-batch: 64\nmax-queue-delay-us: 1500000\n"
                           "access-log: off\nallow-unsigned: true\n";
  p.signal(SIGHUP);
  EXPECT_TRUE(eventually([&] {
    const auto r = c.Get("/v2/models/second/ready");
    return r && r->status == 200;
  }));

  // A request in flight when SIGTERM arrives still gets its answer.
  auto pending = std::async(std::launch::async, [&] {
    httplib::Client c2("127.0.0.1", info["http_port"].get<int>());
    c2.set_read_timeout(30, 0);
    const auto r = c2.Post("/v2/models/fashion/infer", infer_body().dump(), "application/json");
    return r ? r->status : -1;
  });
  ASSERT_TRUE(eventually([&] {
    const auto m = c.Get("/metrics");
    return m && m->body.find("bulwark_inflight_requests 1") != std::string::npos;
  }));
  p.signal(SIGTERM);
  EXPECT_EQ(pending.get(), 200);
  EXPECT_EQ(p.wait_exit(), 0);
}

// SIGHUP: every model and the tokens are checked before anything changes, then swapped at once;
// a reload that fails anywhere changes nothing, and a model whose file did not change keeps its
// version.
TEST(ServeProcess, SighupReloadIsAllOrNothingAndKeepsUnchangedVersions) {
  TempDir dir;
  const auto a = write_model(dir, "a.pt", "mlp", 1), b = write_model(dir, "b.pt", "mlp", 2);
  const auto live = dir.file("live.pt");
  std::filesystem::copy_file(a, live);
  const auto tokens = dir.file("tokens.yaml");
  auto write_tokens = [&tokens](const std::string& secret) {
    std::ofstream(tokens) << "tokens:\n  - id: ops\n    sha256: " << serve::sha256_hex(secret)
                          << "\n    roles: [infer, admin]\n";
  };
  write_tokens("first-secret");
  const auto config = dir.file("serve.yaml");
  auto write_config = [&](const std::string& extra_models) {
    std::ofstream(config) << "model:\n  fashion: " << live << "\n  second: " << b << "\n" << extra_models
                          << "tokens: " << tokens
                          << "\nhttp-port: 0\ngrpc-port: -1\naccess-log: off\nallow-unsigned: true\n";
  };
  write_config("");
  const auto log = dir.file("stderr.txt");
  ServerProcess p({"--json", "serve", "--config", config}, log);
  const auto line = p.first_line();
  ASSERT_FALSE(line.empty()) << "server printed nothing: " << read_file(log);
  httplib::Client c("127.0.0.1", json::parse(line)["http_port"].get<int>());
  c.set_read_timeout(30, 0);
  auto version_of = [&c](const std::string& model, const std::string& secret) -> std::string {
    const auto r = c.Get("/v2/models/" + model, {{"Authorization", "Bearer " + secret}});
    if (!r || r->status != 200) return r ? "status " + std::to_string(r->status) : "no answer";
    return json::parse(r->body)["versions"][0].get<std::string>();
  };
  ASSERT_EQ(version_of("fashion", "first-secret"), "1");
  ASSERT_EQ(version_of("second", "first-secret"), "1");

  // A SIGHUP with nothing changed, then one that adds a model: signals are handled in order, so
  // once `third` serves, the first reload is done too.
  p.signal(SIGHUP);
  write_config("  third: " + a + "\n");
  p.signal(SIGHUP);
  ASSERT_TRUE(eventually([&] { return version_of("third", "first-secret") == "1"; })) << read_file(log);
  EXPECT_EQ(version_of("fashion", "first-secret"), "1") << "an unchanged model kept serving the same version";
  EXPECT_EQ(version_of("second", "first-secret"), "1");

  // New tokens, fashion's file changed, and a broken model: the reload fails as a whole.
  write_tokens("second-secret");
  std::filesystem::copy_file(b, live, std::filesystem::copy_options::overwrite_existing);
  std::ofstream(dir.file("broken.pt")) << "not a model";
  write_config("  third: " + a + "\n  broken: " + dir.file("broken.pt") + "\n");
  p.signal(SIGHUP);
  ASSERT_TRUE(eventually([&] { return read_file(log).find("reload failed") != std::string::npos; })) << read_file(log);
  EXPECT_EQ(version_of("fashion", "first-secret"), "1") << "the old tokens and the old model still serve";
  EXPECT_EQ(version_of("fashion", "second-secret"), "status 401") << "the new tokens did not go live";
  EXPECT_EQ(version_of("broken", "first-secret"), "status 404");

  // Fixed: everything goes live together; only the model whose file changed gets a new version.
  write_config("  third: " + a + "\n");
  p.signal(SIGHUP);
  ASSERT_TRUE(eventually([&] { return version_of("fashion", "second-secret") == "2"; })) << read_file(log);
  EXPECT_EQ(version_of("second", "second-secret"), "1");
  EXPECT_EQ(version_of("third", "second-secret"), "1");
  EXPECT_EQ(version_of("fashion", "first-secret"), "status 401");
  p.signal(SIGTERM);
  EXPECT_EQ(p.wait_exit(), 0);
}

// The server's resident memory, from /proc.
int64_t rss_bytes(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stoll(line.substr(6)) * 1024;
  }
  return -1;
}

// One 60 MB gRPC message without a token (before: read and decoded under a 64 MiB limit, then
// refused for the missing token; as a repeated field of empty messages that cost 5.9 GB). The
// limit is now sized to --max-batch rows of the served input (1 MiB for a 28x28 model): gRPC refuses
// the message from its length prefix, and the server's memory does not grow by its size.
TEST(ServeProcess, AnOversizedGrpcMessageIsRefusedBeforeItIsRead) {
  TempDir dir;
  const auto model = write_model(dir, "a.pt", "mlp", 1);
  const auto tokens = dir.file("tokens.yaml");
  std::ofstream(tokens) << "tokens:\n  - id: ops\n    sha256: " << serve::sha256_hex("the-secret")
                        << "\n    roles: [infer]\n";
  ServerProcess p({"--json", "serve", "--model", "fashion=" + model, "--allow-unsigned", "--tokens", tokens, "--http-port",
                   "-1", "--grpc-port", "0", "--access-log", "off"},
                  dir.file("stderr.txt"));
  const auto line = p.first_line();
  ASSERT_FALSE(line.empty()) << read_file(dir.file("stderr.txt"));
  const auto started = json::parse(line);
  EXPECT_EQ(started["grpc_max_message_bytes"], 1 << 20);
  EXPECT_EQ(started["grpc_memory_bytes"], 32 << 20);
  auto stub = inference::GRPCInferenceService::NewStub(grpc::CreateChannel(
      "127.0.0.1:" + std::to_string(started["grpc_port"].get<int>()), grpc::InsecureChannelCredentials()));
  auto valid = [&stub] {
    auto q = one_image_request("fashion");
    grpc::ClientContext ctx;
    ctx.AddMetadata("authorization", "Bearer the-secret");
    inference::ModelInferResponse resp;
    return stub->ModelInfer(&ctx, q, &resp).error_code();
  };
  ASSERT_EQ(valid(), grpc::StatusCode::OK);
  const int64_t before = rss_bytes(p.pid());
  ASSERT_GT(before, 0);
  inference::ModelInferRequest big;
  big.set_model_name("fashion");
  big.add_raw_input_contents(std::string(60u << 20, '\0'));
  auto send_big = [&] {
    grpc::ClientContext ctx;  // no token
    inference::ModelInferResponse resp;
    return stub->ModelInfer(&ctx, big, &resp);
  };
  // Refused before a byte of it is decoded: by the token check on the call's metadata (the handler
  // runs before the message is read), or by the message limit at its length prefix.
  const auto refused = [](grpc::StatusCode c) {
    return c == grpc::StatusCode::UNAUTHENTICATED || c == grpc::StatusCode::RESOURCE_EXHAUSTED;
  };
  const auto st = send_big();
  EXPECT_TRUE(refused(st.error_code())) << st.error_code() << " " << st.error_message();
  int64_t after = rss_bytes(p.pid());
  EXPECT_LT(after - before, int64_t{16} << 20) << "one message: RSS " << before << " -> " << after;
  // 64 at once, while a valid client keeps asking. The 64 share one serialized copy of the message
  // (a static slice), so the client's own memory stays at one 60 MB buffer.
  const std::string wire = big.SerializeAsString();
  big.Clear();
  grpc::Slice slice(wire.data(), wire.size(), grpc::Slice::STATIC_SLICE);
  const grpc::ByteBuffer message(&slice, 1);
  grpc::GenericStub generic(grpc::CreateChannel("127.0.0.1:" + std::to_string(started["grpc_port"].get<int>()),
                                                grpc::InsecureChannelCredentials()));
  constexpr int kFlood = 64;
  std::vector<std::unique_ptr<grpc::ClientContext>> contexts;
  std::vector<grpc::ByteBuffer> replies(kFlood);
  std::vector<std::promise<grpc::Status>> done(kFlood);
  for (int i = 0; i < kFlood; ++i) {
    contexts.push_back(std::make_unique<grpc::ClientContext>());  // no token
    generic.UnaryCall(contexts.back().get(), "/inference.GRPCInferenceService/ModelInfer", grpc::StubOptions(), &message,
                      &replies[static_cast<size_t>(i)],
                      [&done, i](grpc::Status s) { done[static_cast<size_t>(i)].set_value(std::move(s)); });
  }
  std::vector<double> seconds;
  int answered = 0;
  for (int i = 0; i < 20; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    const auto code = valid();
    answered += code == grpc::StatusCode::OK;
    if (code != grpc::StatusCode::OK) std::cerr << "valid request " << i << " failed: code " << code << "\n";
    seconds.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  for (auto& d : done) {
    const auto s = d.get_future().get();
    EXPECT_TRUE(refused(s.error_code())) << s.error_code() << " " << s.error_message();
  }
  after = rss_bytes(p.pid());
  std::sort(seconds.begin(), seconds.end());
  std::cerr << "64 unauthenticated 60 MB messages at once: server RSS +" << (after - before) / (1 << 20)
            << " MiB; valid requests meanwhile p50 " << seconds[10] * 1e3 << " ms, max " << seconds.back() * 1e3 << " ms\n";
  // The quota bounds the buffers of all streams together (32 MiB); the threads that served the
  // calls add their own stacks and arenas.
  EXPECT_LT(after - before, int64_t{64} << 20) << "64 messages: RSS " << before << " -> " << after;
  EXPECT_EQ(answered, 20) << "valid requests keep being answered";
}

TEST(ServeProcess, BadStartupExitsWithAClearError) {
  TempDir dir;
  const auto r = run_command(std::string(BULWARK_BIN) + " serve --allow-unsigned --model fashion=" + dir.file("none.pt") +
                             " --http-port 0 --grpc-port -1");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("none.pt"), std::string::npos) << r.output;
  const auto r2 = run_command(std::string(BULWARK_BIN) + " serve --model nopath --http-port 0");
  EXPECT_EQ(r2.exit_code, 2) << r2.output;
  EXPECT_NE(r2.output.find("NAME=PATH"), std::string::npos) << r2.output;
  const auto config = dir.file("bad.yaml");
  std::ofstream(config) << "http-prot: 8000\n";
  const auto r3 = run_command(std::string(BULWARK_BIN) + " serve --config " + config);
  EXPECT_EQ(r3.exit_code, 2) << r3.output;
  EXPECT_NE(r3.output.find("unknown key 'http-prot'"), std::string::npos) << r3.output;
  const auto r4 = run_command(std::string(BULWARK_BIN) + " serve --model a=b.pt --max-batch 0 --http-port 0");
  EXPECT_EQ(r4.exit_code, 2) << r4.output;
  EXPECT_NE(r4.output.find("--max-batch"), std::string::npos) << r4.output;
  const auto r5 = run_command(std::string(BULWARK_BIN) + " serve --model a=b.pt --max-batch 32 --max-queue 8 --http-port 0");
  EXPECT_EQ(r5.exit_code, 2) << r5.output;
  EXPECT_NE(r5.output.find("--max-queue (8 rows) must be >= --max-batch (32)"), std::string::npos) << r5.output;
  const auto r6 = run_command(std::string(BULWARK_BIN) + " serve --model a=b.pt --request-timeout-ms 0 --http-port 0");
  EXPECT_EQ(r6.exit_code, 2) << r6.output;
  EXPECT_NE(r6.output.find("--request-timeout-ms must be in 1..3600000"), std::string::npos) << r6.output;
}

TEST(ServeProcess, TokenCommandPrintsAWorkingEntry) {
  const auto r = run_command(std::string(BULWARK_BIN) + " --json token --id ci --roles infer,admin");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto j = json::parse(r.output);
  EXPECT_EQ(j["sha256"], serve::sha256_hex(j["token"]));
  EXPECT_EQ(j["roles"], json::array({"infer", "admin"}));
  const auto bad = run_command(std::string(BULWARK_BIN) + " token --id ci --roles root");
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_NE(bad.output.find("unknown role 'root'"), std::string::npos);
}

}  // namespace
}  // namespace bulwark::testing
