// bench/soak/soak.cpp — the run's shared state (soak.h): recording an answer, and the REST and
// gRPC clients every load thread opens.
#include "soak.h"

namespace bulwark::soak {

double since_s(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

void replace_all(std::string& s, const std::string& from, const std::string& to) {
  for (size_t at = s.find(from); at != std::string::npos; at = s.find(from, at + to.size()))
    s.replace(at, from.size(), to);
}

void Soak::record(Tally& t, const std::string& kind, const std::string& result, Verdict v, const std::string& detail) {
  auto& c = t.counts[{kind, result}];
  if (c.n++ == 0) {
    c.verdict = v;
    c.sample = detail.substr(0, 300);
  }
  ++live.requests;
  if (v == Verdict::kFailed) ++live.failed;
}

httplib::Client Soak::http(const std::string& token) const {
  httplib::Client c("127.0.0.1", http_port);
  c.set_keep_alive(true);
  c.set_tcp_nodelay(true);
  c.set_read_timeout(30, 0);
  if (!token.empty()) c.set_default_headers({{"Authorization", "Bearer " + token}});
  return c;
}

std::unique_ptr<inference::GRPCInferenceService::Stub> Soak::grpc() const {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);  // a connection per client, as separate processes have
  args.SetMaxReceiveMessageSize(-1);
  return inference::GRPCInferenceService::NewStub(
      grpc::CreateCustomChannel("127.0.0.1:" + std::to_string(grpc_port), grpc::InsecureChannelCredentials(), args));
}

}  // namespace bulwark::soak
