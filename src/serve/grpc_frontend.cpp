#include "serve/grpc_frontend.h"

#include <algorithm>

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/resource_quota.h>

#include <cstring>

#include "core/error.h"
#include "core/files.h"
#include "core/version.h"
#include "grpc_predict_v2.grpc.pb.h"
#include "health.grpc.pb.h"
#include "serve/rest_codec.h"
#include "serve/status.h"

namespace bulwark::serve {
namespace {

grpc::Status to_grpc(const Error& e) {
  return grpc::Status(static_cast<grpc::StatusCode>(grpc_code(e)), e.what());
}

std::string authorization_of(const grpc::ServerContext* ctx) {
  const auto& md = ctx->client_metadata();
  const auto it = md.find("authorization");
  return it == md.end() ? "" : std::string(it->second.data(), it->second.size());
}

// "ipv4:127.0.0.1:5000" -> "127.0.0.1", "ipv6:[::1]:5000" -> "[::1]": the address without the
// port, which changes with every connection and would split one client's query history.
std::string peer_address(const std::string& peer) {
  const auto colon = peer.find(':');
  if (colon == std::string::npos) return peer;
  const std::string scheme = peer.substr(0, colon), rest = peer.substr(colon + 1);
  if (scheme == "ipv6" && !rest.empty() && rest[0] == '[') return rest.substr(0, rest.find(']') + 1);
  if (scheme == "ipv4") return rest.substr(0, rest.rfind(':'));
  return rest;
}

// Every handler goes through here: an Error maps through the one status table; anything else
// (a library failure, a bug) is INTERNAL with its detail in the server's log only.
template <typename Fn>
grpc::Status guarded(Fn fn) {
  try {
    fn();
    return grpc::Status::OK;
  } catch (const Error& e) {
    return to_grpc(e);
  } catch (const std::exception& e) {
    return grpc::Status(grpc::StatusCode::INTERNAL, internal_error_message("", e.what()));
  }
}

InferInput decode_input(const inference::ModelInferRequest& req, int k, const BodyLimits& limits) {
  const auto& in = req.inputs(k);
  InferInput x;
  x.name = in.name();
  x.datatype = in.datatype();
  x.shape.assign(in.shape().begin(), in.shape().end());
  const std::string named = "input '" + x.name + "'";
  const int64_t count = checked_element_count(x.shape, limits.max_elements, named);
  check_rows(x.shape, limits.max_rows, named);
  if (x.datatype != "FP32" && x.datatype != "UINT8") {
    throw invalid_argument(named + ": datatype '" + x.datatype + "' is not supported (FP32 or UINT8)");
  }
  if (req.raw_input_contents_size() > 0) {
    if (in.has_contents()) throw invalid_argument(named + ": give contents or raw_input_contents, not both");
    if (req.raw_input_contents_size() != req.inputs_size()) {
      throw invalid_argument("raw_input_contents has " + std::to_string(req.raw_input_contents_size()) +
                             " entries for " + std::to_string(req.inputs_size()) + " inputs");
    }
    const auto& raw = req.raw_input_contents(k);
    const size_t want = static_cast<size_t>(count) * (x.datatype == "UINT8" ? 1 : 4);
    if (raw.size() != want) {
      throw invalid_argument(named + ": raw_input_contents holds " + std::to_string(raw.size()) + " bytes, shape and " +
                             "datatype need " + std::to_string(want));
    }
    x.values.resize(static_cast<size_t>(count));
    if (x.datatype == "FP32") {
      std::memcpy(x.values.data(), raw.data(), want);
    } else {
      for (int64_t i = 0; i < count; ++i) x.values[i] = static_cast<unsigned char>(raw[i]);
    }
    return x;
  }
  const auto& c = in.contents();
  const int64_t given = x.datatype == "FP32" ? c.fp32_contents_size() : c.uint_contents_size();
  if (given != count) {  // checked before copying anything
    throw invalid_argument(named + ": shape holds " + std::to_string(count) + " values, got " + std::to_string(given) +
                           (x.datatype == "FP32" ? " in contents.fp32_contents" : " in contents.uint_contents"));
  }
  if (x.datatype == "FP32") {
    x.values.assign(c.fp32_contents().begin(), c.fp32_contents().end());
  } else {
    x.values.reserve(static_cast<size_t>(count));
    for (const auto v : c.uint_contents()) x.values.push_back(static_cast<float>(v));  // range checked by the core
  }
  return x;
}

void set_parameters(const nlohmann::json& params, google::protobuf::Map<std::string, inference::InferParameter>* out) {
  for (const auto& [key, value] : params.items()) {
    inference::InferParameter p;
    if (value.is_boolean()) p.set_bool_param(value.get<bool>());
    else if (value.is_number_integer()) p.set_int64_param(value.get<int64_t>());
    else if (value.is_string()) p.set_string_param(value.get<std::string>());
    else p.set_string_param(value.dump());  // floats: the V2 gRPC InferParameter has no double
    (*out)[key] = p;
  }
}

constexpr const char* kInferenceService = "inference.GRPCInferenceService";

}  // namespace

// ModelInfer is a streamed unary method: the handler runs when the call's metadata arrives, so the
// token is checked before a byte of the message is read, let alone decoded.
class GrpcFrontend::Service final
    : public inference::GRPCInferenceService::WithStreamedUnaryMethod_ModelInfer<inference::GRPCInferenceService::Service> {
 public:
  explicit Service(InferenceCore& core) : core_(core) {}

  grpc::Status ServerLive(grpc::ServerContext*, const inference::ServerLiveRequest*,
                          inference::ServerLiveResponse* r) override {
    r->set_live(core_.live());
    return grpc::Status::OK;
  }
  grpc::Status ServerReady(grpc::ServerContext*, const inference::ServerReadyRequest*,
                           inference::ServerReadyResponse* r) override {
    r->set_ready(core_.ready());
    return grpc::Status::OK;
  }
  grpc::Status ModelReady(grpc::ServerContext* ctx, const inference::ModelReadyRequest* q,
                          inference::ModelReadyResponse* r) override {
    return guarded([&] {
      core_.authorize(authorization_of(ctx), Role::kInfer);
      r->set_ready(core_.model_ready(q->name(), q->version()));
    });
  }
  grpc::Status ServerMetadata(grpc::ServerContext*, const inference::ServerMetadataRequest*,
                              inference::ServerMetadataResponse* r) override {
    r->set_name("bulwark");
    r->set_version(BULWARK_VERSION);
    for (const auto& e : core_.extensions()) r->add_extensions(e);
    return grpc::Status::OK;
  }
  grpc::Status ModelMetadata(grpc::ServerContext* ctx, const inference::ModelMetadataRequest* q,
                             inference::ModelMetadataResponse* r) override {
    return guarded([&] {
      core_.authorize(authorization_of(ctx), Role::kInfer);
      const auto md = core_.model_metadata(q->name(), q->version());
      r->set_name(md.name);
      for (const auto& v : md.versions) r->add_versions(v);
      r->set_platform(md.platform);
      auto fill = [](const TensorMetadata& t, inference::ModelMetadataResponse::TensorMetadata* m) {
        m->set_name(t.name);
        m->set_datatype(t.datatype);
        for (const auto d : t.shape) m->add_shape(d);
      };
      for (const auto& t : md.inputs) fill(t, r->add_inputs());
      for (const auto& t : md.outputs) fill(t, r->add_outputs());
    });
  }
  grpc::Status StreamedModelInfer(
      grpc::ServerContext* ctx,
      grpc::ServerUnaryStreamer<inference::ModelInferRequest, inference::ModelInferResponse>* stream) override {
    const grpc::Status refused = guarded([&] {
      core_.authenticate(RequestHead{"unknown", "", peer_address(ctx->peer())}, authorization_of(ctx), "grpc");
    });
    if (!refused.ok()) return refused;  // the message is never read
    inference::ModelInferRequest q;
    if (!stream->Read(&q)) return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "no request message arrived");
    inference::ModelInferResponse r;
    const grpc::Status st = infer(ctx, &q, &r);
    if (st.ok() && !stream->Write(r)) return grpc::Status(grpc::StatusCode::UNAVAILABLE, "the answer could not be sent");
    return st;
  }

 private:
  grpc::Status infer(grpc::ServerContext* ctx, const inference::ModelInferRequest* q, inference::ModelInferResponse* r) {
    return guarded([&] {
      const RequestHead head{q->model_name(), q->model_version(), peer_address(ctx->peer())};
      // The message's tensors are decoded only once the caller is authenticated.
      const auto resp = core_.infer(head, authorization_of(ctx), "grpc", [q](const BodyLimits& limits) {
        InferRequest req;
        req.id = q->id();
        if (req.id.size() > 256) throw invalid_argument("id is longer than 256 characters");
        for (int k = 0; k < q->inputs_size(); ++k) req.inputs.push_back(decode_input(*q, k, limits));
        for (const auto& o : q->outputs()) req.outputs.push_back({o.name(), false});
        return req;
      });
      const bool raw = q->raw_input_contents_size() > 0;
      r->set_model_name(resp.model);
      r->set_model_version(resp.version);
      r->set_id(resp.id);
      set_parameters(guard_parameters(resp), r->mutable_parameters());
      for (const auto& o : resp.outputs) {
        auto* out = r->add_outputs();
        out->set_name(o.name);
        out->set_datatype(o.datatype);
        for (const auto d : o.shape) out->add_shape(d);
        if (raw) {  // answer raw with raw, as Triton does
          std::string bytes;
          if (o.datatype == "FP32") {
            bytes.assign(reinterpret_cast<const char*>(o.fp32.data()), o.fp32.size() * sizeof(float));
          } else {
            for (const auto& s : o.bytes) {
              const uint32_t n = static_cast<uint32_t>(s.size());
              bytes.append(reinterpret_cast<const char*>(&n), 4);
              bytes += s;
            }
          }
          r->add_raw_output_contents(std::move(bytes));
        } else if (o.datatype == "FP32") {
          out->mutable_contents()->mutable_fp32_contents()->Add(o.fp32.begin(), o.fp32.end());
        } else {
          for (const auto& s : o.bytes) out->mutable_contents()->add_bytes_contents(s);
        }
      }
    });
  }
 public:
  // The model-repository RPCs: an authenticated admin token, as over REST.
  grpc::Status RepositoryIndex(grpc::ServerContext* ctx, const inference::RepositoryIndexRequest* q,
                               inference::RepositoryIndexResponse* r) override {
    return guarded([&] {
      core_.authorize_repository(authorization_of(ctx));
      for (const auto& e : core_.index()) {
        if (q->ready() && e.state != "READY") continue;
        auto* m = r->add_models();
        m->set_name(e.name);
        m->set_version(e.version);
        m->set_state(e.state);
        m->set_reason(e.reason);
      }
    });
  }
  grpc::Status RepositoryModelLoad(grpc::ServerContext* ctx, const inference::RepositoryModelLoadRequest* q,
                                   inference::RepositoryModelLoadResponse* r) override {
    return guarded([&] {
      const auto who = core_.authorize_repository(authorization_of(ctx));
      core_.load_model_for_client(q->model_name(), "", who);  // KServe's message names no source: reload
      r->set_model_name(q->model_name());
      r->set_isloaded(true);
    });
  }
  grpc::Status RepositoryModelUnload(grpc::ServerContext* ctx, const inference::RepositoryModelUnloadRequest* q,
                                     inference::RepositoryModelUnloadResponse* r) override {
    return guarded([&] {
      core_.authorize_repository(authorization_of(ctx));
      core_.unload_model(q->model_name());
      r->set_model_name(q->model_name());
      r->set_isunloaded(true);
    });
  }

 private:
  InferenceCore& core_;
};

// grpc.health.v1.Health: Check answers the server's readiness (SERVING while ready, NOT_SERVING
// with no model or while draining) for "" and the inference service. Watch is left
// unimplemented: a sync stream would hold a request thread per watcher, a cheap way for anyone
// to starve the server; clients fall back to Check.
class GrpcFrontend::Health final : public grpc::health::v1::Health::Service {
 public:
  explicit Health(InferenceCore& core) : core_(core) {}
  grpc::Status Check(grpc::ServerContext*, const grpc::health::v1::HealthCheckRequest* q,
                     grpc::health::v1::HealthCheckResponse* r) override {
    if (!q->service().empty() && q->service() != kInferenceService) {
      return grpc::Status(grpc::StatusCode::NOT_FOUND, "unknown service (known: '' and " +
                                                           std::string(kInferenceService) + ")");
    }
    r->set_status(core_.ready() ? grpc::health::v1::HealthCheckResponse::SERVING
                                : grpc::health::v1::HealthCheckResponse::NOT_SERVING);
    return grpc::Status::OK;
  }

 private:
  InferenceCore& core_;
};

void GrpcOptions::validate() const {
  if (port < 0 || port > 65535) throw invalid_argument("--grpc-port must be in 0..65535");
  if (max_message_bytes < 0) throw invalid_argument("--grpc-max-message-bytes must be >= 0 (0: sized to --max-batch)");
  if (max_batch_rows < 1) throw invalid_argument("--max-batch must be >= 1");
  if (memory_bytes < 0) throw invalid_argument("--grpc-memory-bytes must be >= 0 (0: 4 messages, at least 32 MiB)");
  if (threads < 1 || threads > 4096) throw invalid_argument("--threads must be in 1..4096");
  if (tls_cert.empty() != tls_key.empty()) throw invalid_argument("--tls-cert and --tls-key go together");
}

int message_limit_for(const InferenceCore& core, int64_t max_batch_rows) {
  int64_t values = 0;
  for (const auto& entry : core.index()) {
    try {
      for (const auto& in : core.model_metadata(entry.name, "").inputs) {
        int64_t n = 1;
        for (const int64_t d : in.shape) n *= d > 0 ? d : 1;  // the batch axis is -1
        values = std::max(values, n);
      }
    } catch (const std::exception&) {
      // not loaded (unavailable): it does not size the limit
    }
  }
  const int64_t bytes = max_batch_rows * values * 4 + (int64_t{64} << 10);
  return static_cast<int>(std::clamp<int64_t>(bytes, int64_t{1} << 20, int64_t{1} << 30));
}

GrpcFrontend::GrpcFrontend(InferenceCore& core, GrpcOptions options)
    : core_(core), options_(std::move(options)), service_(std::make_unique<Service>(core)),
      health_(std::make_unique<Health>(core)) {
  options_.validate();
  std::shared_ptr<grpc::ServerCredentials> creds = grpc::InsecureServerCredentials();
  if (!options_.tls_cert.empty()) {
    grpc::SslServerCredentialsOptions ssl;
    ssl.pem_key_cert_pairs.push_back({read_file(options_.tls_key), read_file(options_.tls_cert)});
    creds = grpc::SslServerCredentials(ssl);
  }
  // Server reflection (grpcurl without -proto): gRPC offers it only as a process-wide plugin
  // that every server built afterwards gets; registering it again is a no-op.
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(options_.host + ":" + std::to_string(options_.port), creds, &port_);
  builder.RegisterService(service_.get());
  builder.RegisterService(health_.get());
  if (options_.max_message_bytes == 0) options_.max_message_bytes = message_limit_for(core, options_.max_batch_rows);
  builder.SetMaxReceiveMessageSize(options_.max_message_bytes);
  builder.SetMaxSendMessageSize(options_.max_message_bytes);
  grpc::ResourceQuota quota("bulwark");
  quota.SetMaxThreads(options_.threads);
  // gRPC's transport reads a stream's data as flow control allows, and a message refused for its
  // size has mostly been read by then: the quota bounds what all connections may hold at once
  // (measured before ModelInfer checked the token ahead of the read: a 60 MB message grew the
  // server by 60 MB with no quota, 33 MB at 32 MiB, < 8 MB at 8 MiB). An unauthenticated message is
  // now refused when its call's metadata arrives; at 8 MiB, 64 of them at once starved valid calls
  // of quota (RESOURCE_EXHAUSTED, 2 runs in 6), at 32 MiB none in 8, the server growing 7-15 MiB.
  if (options_.memory_bytes == 0) {
    options_.memory_bytes = std::max<int64_t>(int64_t{32} << 20, int64_t{4} * options_.max_message_bytes);
  }
  quota.Resize(static_cast<size_t>(options_.memory_bytes));
  builder.SetResourceQuota(quota);
  server_ = builder.BuildAndStart();
  if (!server_ || port_ == 0) {
    throw Error(ErrorKind::kIo, "--grpc-port: cannot listen on " + options_.host + ":" + std::to_string(options_.port));
  }
}

GrpcFrontend::~GrpcFrontend() { stop(); }

void GrpcFrontend::stop() {
  if (!server_) return;
  // Calls still running at the drain deadline are cancelled.
  server_->Shutdown(std::chrono::system_clock::now() +
                    std::chrono::milliseconds(core_.options().batching.drain_timeout_ms));
  server_->Wait();
  server_.reset();
}

}  // namespace bulwark::serve
