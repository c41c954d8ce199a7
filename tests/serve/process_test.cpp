// `bulwark serve` as a process: ports printed at start, config file, SIGHUP reload, SIGTERM drain.
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <future>
#include <regex>

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
