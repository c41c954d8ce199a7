// serve/grpc_frontend.h — the V2 gRPC frontend (inference.GRPCInferenceService, with the
// model-repository RPCs), the standard health service (grpc.health.v1) and server reflection:
// translates protobuf messages to the core's types and Error kinds to gRPC status codes. Same
// lifecycle as the HTTP frontend: create (binds, may throw), start, stop (drains in-flight calls,
// cancelling what still runs after the core's drain timeout).
#pragma once

#include <memory>
#include <string>

#include "serve/core.h"

namespace grpc {
class Server;
}

namespace bulwark::serve {

struct GrpcOptions {
  std::string host = "127.0.0.1";
  int port = 8001;  // 0 = any free port
  int threads = 128;  // above the default --max-queue (64 rows): a waiting request holds a thread
  int max_message_bytes = 64 << 20;
  std::string tls_cert, tls_key;

  void validate() const;
};

class GrpcFrontend {
 public:
  GrpcFrontend(InferenceCore& core, GrpcOptions options);
  ~GrpcFrontend();
  GrpcFrontend(const GrpcFrontend&) = delete;
  GrpcFrontend& operator=(const GrpcFrontend&) = delete;

  int port() const { return port_; }
  void start() {}  // gRPC serves from construction on its own threads
  void stop();

 private:
  class Service;
  class Health;
  InferenceCore& core_;
  const GrpcOptions options_;
  std::unique_ptr<Service> service_;
  std::unique_ptr<Health> health_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
};

}  // namespace bulwark::serve
