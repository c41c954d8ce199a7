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
  // Largest message either way; 0 (the default): sized to `max_batch_rows` rows of the largest
  // input among the models loaded when the frontend starts (FP32, 4 bytes a value, plus 64 KiB),
  // at least 1 MiB — 1 MiB for the zoo's 28x28 models. gRPC refuses a longer message from its
  // length prefix (RESOURCE_EXHAUSTED), before reading or decoding it, so an unauthenticated
  // client cannot make the server hold a message it will refuse anyway.
  int max_message_bytes = 0;
  int64_t max_batch_rows = 32;  // --max-batch
  // The memory all gRPC connections' buffers may hold at once (grpc::ResourceQuota); 0 (the
  // default): 4 messages of max_message_bytes, at least 32 MiB. Under it gRPC slows reads (smaller
  // flow-control windows) instead of growing.
  int64_t memory_bytes = 0;
  std::string tls_cert, tls_key;

  void validate() const;
};

// The default gRPC message limit for `core`'s models now (see GrpcOptions::max_message_bytes).
int message_limit_for(const InferenceCore& core, int64_t max_batch_rows);

class GrpcFrontend {
 public:
  GrpcFrontend(InferenceCore& core, GrpcOptions options);
  ~GrpcFrontend();
  GrpcFrontend(const GrpcFrontend&) = delete;
  GrpcFrontend& operator=(const GrpcFrontend&) = delete;

  int port() const { return port_; }
  int max_message_bytes() const { return options_.max_message_bytes; }  // as in force (0 resolved)
  int64_t memory_bytes() const { return options_.memory_bytes; }
  void start() {}  // gRPC serves from construction on its own threads
  void stop();

 private:
  class Service;
  class Health;
  InferenceCore& core_;
  GrpcOptions options_;  // max_message_bytes resolved at construction, then never changed
  std::unique_ptr<Service> service_;
  std::unique_ptr<Health> health_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
};

}  // namespace bulwark::serve
