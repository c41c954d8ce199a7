// Transport edge cases: TLS on both frontends, and raw HTTP bytes a client library would never send.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <grpcpp/grpcpp.h>

#include "core/files.h"
#include "grpc_predict_v2.grpc.pb.h"
#include "server_fixture.h"

namespace bulwark::testing {
namespace {

// Sends raw bytes, half-closes, and returns everything the server answered.
std::string raw_exchange(int port, const std::string& bytes) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) return "connect failed";
  ::send(fd, bytes.data(), bytes.size(), 0);
  ::shutdown(fd, SHUT_WR);
  std::string out;
  char buf[4096];
  ssize_t n;
  while ((n = ::recv(fd, buf, sizeof buf, 0)) > 0) out.append(buf, static_cast<size_t>(n));
  ::close(fd);
  return out;
}

int status_of(const std::string& response) {
  if (response.rfind("HTTP/1.1 ", 0) != 0) return -1;
  return std::stoi(response.substr(9, 3));
}

TEST(Transport, WrongContentLengthsGet4xxAndTheServerKeepsServing) {
  TestServer s;
  const std::string head = "POST /v2/models/fashion/infer HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer " +
                           std::string(kInferToken) + "\r\nContent-Type: application/json\r\n";
  const std::string body = infer_body().dump();
  struct Case {
    std::string name, bytes;
  };
  const std::vector<Case> cases = {
      {"body shorter than Content-Length", head + "Content-Length: " + std::to_string(body.size() + 100) + "\r\n\r\n" + body},
      {"body longer than Content-Length", head + "Content-Length: 10\r\n\r\n" + body},
      {"Content-Length not a number", head + "Content-Length: abc\r\n\r\n" + body},
      {"negative Content-Length", head + "Content-Length: -5\r\n\r\n" + body},
      {"Content-Length over the body limit", head + "Content-Length: 999999999\r\n\r\n" + body},
      {"garbage request line", "NOT HTTP AT ALL\r\n\r\n"},
  };
  for (const auto& k : cases) {
    const auto response = raw_exchange(s.http->port(), k.bytes);
    const int status = status_of(response);
    // Either a 4xx answer, or (the library's choice for a body that never arrives) a closed
    // connection; never a 2xx/5xx and never a crash.
    if (status != -1) {
      EXPECT_GE(status, 400) << k.name << ": " << response;
      EXPECT_LT(status, 500) << k.name << ": " << response;
    } else {
      EXPECT_TRUE(response.empty()) << k.name << ": " << response;
    }
  }
  EXPECT_EQ(s.client().Post("/v2/models/fashion/infer", body, "application/json")->status, 200);
}

struct Certificate {
  explicit Certificate(const TempDir& dir) : cert(dir.file("cert.pem")), key(dir.file("key.pem")) {
    const auto r = run_command("openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost -addext "
                               "subjectAltName=DNS:localhost,IP:127.0.0.1 -keyout " + key + " -out " + cert);
    ok = r.exit_code == 0;
    output = r.output;
  }
  std::string cert, key, output;
  bool ok = false;
};

TEST(Transport, TlsOnBothFrontends) {
  TempDir dir;
  const Certificate c(dir);
  ASSERT_TRUE(c.ok) << c.output;
  serve::CoreOptions o;
  o.access_log = "off";
  o.source.allow_unsigned = true;  // unsigned files made for the run
  serve::InferenceCore core(o);
  core.load_model("fashion", write_model(dir, "m.pt", "mlp", 1));
  serve::HttpOptions h;
  h.port = 0;
  h.tls_cert = c.cert;
  h.tls_key = c.key;
  serve::HttpFrontend http(core, h);
  http.start();
  serve::GrpcOptions g;
  g.port = 0;
  g.tls_cert = c.cert;
  g.tls_key = c.key;
  serve::GrpcFrontend grpc(core, g);

  httplib::SSLClient https("127.0.0.1", http.port());
  https.set_ca_cert_path(c.cert.c_str());
  https.enable_server_certificate_verification(true);
  const auto r = https.Post("/v2/models/fashion/infer", infer_body().dump(), "application/json");
  ASSERT_TRUE(r) << "TLS handshake failed";
  EXPECT_EQ(r->status, 200);
  httplib::Client plain("127.0.0.1", http.port());
  plain.set_read_timeout(5, 0);
  const auto p = plain.Get("/v2/health/live");
  EXPECT_FALSE(p && p->status == 200) << "plain HTTP answered on the TLS port";

  grpc::SslCredentialsOptions ssl;
  ssl.pem_root_certs = read_file(c.cert);
  auto stub = inference::GRPCInferenceService::NewStub(
      grpc::CreateChannel("localhost:" + std::to_string(grpc.port()), grpc::SslCredentials(ssl)));
  grpc::ClientContext ctx;
  inference::ServerLiveResponse live;
  const auto st = stub->ServerLive(&ctx, {}, &live);
  EXPECT_TRUE(st.ok()) << st.error_message();
  EXPECT_TRUE(live.live());
  http.stop();
  grpc.stop();
}

// A frontend stopped right after it started, before any request, still stops: httplib's stop()
// is a no-op until its accept loop runs, and the loop then blocked in accept() for good (seen as
// a hung test under load).
TEST(Transport, StopRightAfterStartReturns) {
  serve::CoreOptions o;
  o.access_log = "off";
  serve::InferenceCore core(o);
  for (int i = 0; i < 50; ++i) {
    serve::HttpOptions h;
    h.port = 0;
    h.threads = 1;
    serve::HttpFrontend http(core, h);
    http.start();
    http.stop();
  }
}

TEST(Transport, TlsOptionsAreValidated) {
  serve::CoreOptions o;
  o.access_log = "off";
  o.source.allow_unsigned = true;  // unsigned files made for the run
  serve::InferenceCore core(o);
  serve::HttpOptions h;
  h.port = 0;
  h.tls_cert = "/nonexistent/cert.pem";
  EXPECT_THROW(serve::HttpFrontend(core, h), Error);  // key missing: they go together
  h.tls_key = "/nonexistent/key.pem";
  try {
    serve::HttpFrontend f(core, h);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--tls-cert"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace bulwark::testing
