#include "serve/http_frontend.h"

#include <httplib.h>
#include <sys/socket.h>

#include <chrono>
#include <cmath>
#include <regex>

#include "core/error.h"
#include "core/files.h"
#include "core/version.h"
#include "serve/http_connection.h"
#include "serve/rest_codec.h"
#include "serve/status.h"

namespace bulwark::serve {
namespace {

using nlohmann::json;

const char* kJson = "application/json";
constexpr size_t kMaxFeedbackBytes = 1u << 20;

void send_json(httplib::Response& res, int status, const json& body) {
  res.status = status;
  res.set_content(body.dump(-1, ' ', false, json::error_handler_t::replace), kJson);
}

void send_error(httplib::Response& res, int status, const std::string& message) {
  send_json(res, status, error_json(message));
}

// Every handler goes through here: handlers never let an exception reach the HTTP library. An
// Error maps through the one status table; anything else (a library failure, a bug) is a 500
// whose detail goes to the server's log only.
template <typename Fn>
httplib::Server::Handler guarded(Fn fn) {
  return [fn](const httplib::Request& req, httplib::Response& res) {
    try {
      fn(req, res);
    } catch (const RateLimitedError& e) {
      res.set_header("Retry-After", std::to_string(static_cast<long long>(std::ceil(e.retry_after_s()))));
      send_error(res, http_status(e.kind()), e.what());
    } catch (const Error& e) {
      if (e.kind() == ErrorKind::kUnauthenticated) res.set_header("WWW-Authenticate", "Bearer");
      send_error(res, http_status(e), e.what());
    } catch (const std::exception& e) {
      send_error(res, 500, internal_error_message("", e.what()));
    }
  };
}

std::string version_of(const httplib::Request& req) { return req.matches.size() > 2 ? req.matches[2].str() : ""; }

// Reads an inference body (JSON, or JSON then binary tensors) to the limits the core gives once
// the caller is authenticated and the model known.
InferRequest decode_body(const httplib::Request& req, const BodyLimits& limits) {
  std::optional<size_t> header_len;
  if (req.has_header("Inference-Header-Content-Length")) {
    const auto v = req.get_header_value("Inference-Header-Content-Length");
    if (v.empty() || v.size() > 18 || v.find_first_not_of("0123456789") != std::string::npos) {
      throw invalid_argument("Inference-Header-Content-Length must be a non-negative integer");
    }
    header_len = std::stoull(v);
  }
  RestLimits rest;
  rest.max_elements = limits.max_elements;
  rest.max_rows = limits.max_rows;
  rest.values_per_row = limits.values_per_row;
  return parse_infer_request(req.body, header_len, rest);
}

// Answers `res` and ends the connection after it, so that the unread body is not taken for the
// next request.
void refuse_unread(const httplib::Request& req, httplib::Response& res, int status, const std::string& message) {
  send_error(res, status, message);
  const_cast<httplib::Request&>(req).headers.emplace("Connection", "close");
  close_connection_after_response();
}

// True when `req` carries a body that will not be read: one declared over --max-body-bytes (413),
// or one from a caller without a known token (401). The answer is in `res`.
bool refused_before_body(InferenceCore& core, size_t max_body, const httplib::Request& req, httplib::Response& res) {
  const bool body = req.has_header("Transfer-Encoding") ||
                    (req.has_header("Content-Length") && req.get_header_value("Content-Length") != "0");
  if (!body) return false;
  const auto declared = req.get_header_value("Content-Length");
  if (!declared.empty() && declared.find_first_not_of("0123456789") == std::string::npos &&
      (declared.size() > 18 || std::stoull(declared) > max_body)) {
    refuse_unread(req, res, 413, "request body exceeds the limit (--max-body-bytes " + std::to_string(max_body) + ")");
    return true;
  }
  static const std::regex infer_path(R"(/v2/models/([^/]+)(?:/versions/([^/]+))?/infer)");
  RequestHead head;
  std::smatch m;
  if (std::regex_match(req.path, m, infer_path)) head = RequestHead{m[1], m[2], req.remote_addr};
  try {
    core.authenticate(head, req.get_header_value("Authorization"), "http");
    return false;
  } catch (const Error& e) {
    res.set_header("WWW-Authenticate", "Bearer");
    refuse_unread(req, res, http_status(e), e.what());
    return true;
  }
}

// Model path part of a URL: name, then optional /versions/{v}.
const std::string kModel = R"(/v2/models/([^/]+)(?:/versions/([^/]+))?)";

}  // namespace

void HttpOptions::validate() const {
  if (port < 0 || port > 65535) throw invalid_argument("--http-port must be in 0..65535");
  if (threads < 1 || threads > 4096) throw invalid_argument("--threads must be in 1..4096");
  if (max_body_bytes < 1024) throw invalid_argument("--max-body-bytes must be >= 1024");
  if (max_connections < 1 || max_connections > 1000000) throw invalid_argument("--max-connections must be in 1..1000000");
  if (max_connections_per_client > max_connections) {
    throw invalid_argument("--max-connections-per-client must be in 0..--max-connections (0: no limit)");
  }
  if (tls_cert.empty() != tls_key.empty()) throw invalid_argument("--tls-cert and --tls-key go together");
  if (!tls_cert.empty() && !file_exists(tls_cert)) throw not_found("--tls-cert: no such file " + tls_cert);
  if (!tls_key.empty() && !file_exists(tls_key)) throw not_found("--tls-key: no such file " + tls_key);
}

HttpFrontend::HttpFrontend(InferenceCore& core, HttpOptions options) : core_(core), options_(std::move(options)) {
  options_.validate();
  if (tls()) {
    auto ssl = std::make_unique<httplib::SSLServer>(options_.tls_cert.c_str(), options_.tls_key.c_str());
    if (!ssl->is_valid()) throw invalid_argument("--tls-cert/--tls-key: OpenSSL rejected the certificate or key");
    server_ = std::move(ssl);
    const int threads = options_.threads;
    server_->new_task_queue = [threads] { return new httplib::ThreadPool(static_cast<size_t>(threads)); };
  } else {
    ConnectionLimits limits;
    limits.threads = static_cast<size_t>(options_.threads);
    limits.max_connections = options_.max_connections;
    limits.max_per_address = options_.max_connections_per_client;
    server_ = std::make_unique<BoundedHttpServer>(options_.max_body_bytes, limits);
  }
  server_->set_payload_max_length(options_.max_body_bytes);
  server_->set_keep_alive_max_count(10000);
  server_->set_tcp_nodelay(true);  // small responses: without it Nagle + delayed ACK add ~40 ms each
  server_->set_read_timeout(5, 0);
  server_->set_error_handler([](const httplib::Request& req, httplib::Response& res) {
    // Errors httplib itself produced (no route, body too large, bad request line): give them the
    // V2 JSON shape. Handler errors already have a body.
    if (!res.body.empty()) return;
    // A request httplib could not frame (bad head, body over the limit) leaves the connection's
    // bytes unaccounted for: the answer says so and the connection ends.
    const_cast<httplib::Request&>(req).headers.emplace("Connection", "close");
    close_connection_after_response();
    std::string msg = "no route for " + req.method + " " + req.path;
    if (res.status == 413) msg = "request body exceeds the limit (--max-body-bytes)";
    else if (res.status == 400) msg = "malformed HTTP request";
    else if (res.status != 404) msg = "HTTP error " + std::to_string(res.status);
    res.set_content(error_json(msg).dump(), kJson);
  });
  server_->set_pre_routing_handler([&core = core_, max_body = options_.max_body_bytes](const httplib::Request& req,
                                                                                      httplib::Response& res) {
    // RFC 7230 3.3.3: a request with neither Content-Length nor Transfer-Encoding has an empty
    // body. httplib would instead read to EOF and fail with 400, which breaks the common
    // `curl -X POST .../v2/repository/index`. The request object is httplib's own mutable local.
    if (req.method == "POST" && !req.has_header("Content-Length") && !req.has_header("Transfer-Encoding")) {
      const_cast<httplib::Request&>(req).headers.emplace("Content-Length", "0");
    }
    // A stranger's body is never read: the token is checked here, before httplib reads the body;
    // nor is a body declared larger than the limit (httplib would read it all to discard it).
    return refused_before_body(core, max_body, req, res) ? httplib::Server::HandlerResponse::Handled
                                                         : httplib::Server::HandlerResponse::Unhandled;
  });
  // The same for clients that wait for "100 Continue" (curl, for large bodies): they are answered
  // and never send the body.
  server_->set_expect_100_continue_handler([&core = core_, max_body = options_.max_body_bytes](
                                               const httplib::Request& req, httplib::Response& res) {
    return refused_before_body(core, max_body, req, res) ? res.status : 100;
  });
  server_->set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr) {
    send_error(res, 500, "internal error");
  });
  register_routes();
  int listen_fd = -1;
  server_->set_socket_options([&listen_fd](socket_t sock) {
    httplib::default_socket_options(sock);
    listen_fd = sock;  // the last socket tried is the one that bound
  });
  port_ = options_.port == 0 ? server_->bind_to_any_port(options_.host)
                             : (server_->bind_to_port(options_.host, options_.port) ? options_.port : -1);
  if (port_ < 0) {
    throw Error(ErrorKind::kIo, "--http-port: cannot listen on " + options_.host + ":" + std::to_string(options_.port));
  }
  // cpp-httplib listens with a backlog of 5: a burst of connections past it is dropped or reset by
  // the kernel before the server sees a byte, which no client can tell from a crash. With the
  // kernel's cap, a burst waits its turn and is answered — 503 when the queue is full.
  if (listen_fd >= 0) ::listen(listen_fd, SOMAXCONN);
  server_->set_socket_options(httplib::default_socket_options);  // the lambda above refers to this frame
}

HttpFrontend::~HttpFrontend() { stop(); }

ConnectionCounters HttpFrontend::connection_counters() const {
  const auto* bounded = dynamic_cast<const BoundedHttpServer*>(server_.get());
  return bounded != nullptr ? bounded->counters() : ConnectionCounters{};
}

void HttpFrontend::start() {
  listen_returned_ = false;
  thread_ = std::thread([this] {
    server_->listen_after_bind();
    listen_returned_ = true;  // or done trying: stop() must not wait for it
  });
}

void HttpFrontend::stop() {
  if (!thread_.joinable()) return;
  // httplib's stop() does nothing before its loop runs, and the loop then blocks in accept()
  // for good: a server stopped right after start() (no request yet) would never join. Wait for
  // the loop first (it starts within microseconds; the bound only guards a broken library).
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!server_->is_running() && !listen_returned_ && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  server_->stop();
  thread_.join();
}

void HttpFrontend::register_routes() {
  auto& s = *server_;
  auto& core = core_;
  // The protocol: 200 = true, 4xx = false; the body says it too, as KServe's servers do (its
  // Python client calls .json() on the answer).
  auto health = [](httplib::Response& res, bool ok, json body) { send_json(res, ok ? 200 : 400, body); };
  s.Get("/v2/health/live", guarded([&core, health](const httplib::Request&, httplib::Response& res) {
          health(res, core.live(), {{"live", core.live()}});
        }));
  s.Get("/v2/health/ready", guarded([&core, health](const httplib::Request&, httplib::Response& res) {
          const bool ready = core.ready();
          health(res, ready, {{"ready", ready}});
        }));
  s.Get("/v2", guarded([&core](const httplib::Request&, httplib::Response& res) {
          send_json(res, 200, {{"name", "bulwark"}, {"version", BULWARK_VERSION}, {"extensions", core.extensions()}});
        }));
  s.Get(kModel + "/ready", guarded([&core, health](const httplib::Request& req, httplib::Response& res) {
          core.authorize(req.get_header_value("Authorization"), Role::kInfer);
          const bool ready = core.model_ready(req.matches[1], version_of(req));
          health(res, ready, {{"name", req.matches[1].str()}, {"ready", ready}});
        }));
  s.Get(kModel, guarded([&core](const httplib::Request& req, httplib::Response& res) {
          core.authorize(req.get_header_value("Authorization"), Role::kInfer);
          send_json(res, 200, model_metadata_json(core.model_metadata(req.matches[1], version_of(req))));
        }));
  s.Post(kModel + "/infer", guarded([&core](const httplib::Request& req, httplib::Response& res) {
           // The body is parsed only once the caller is authenticated and the model known.
           const RequestHead head{req.matches[1], version_of(req), req.remote_addr};
           const auto resp = core.infer(head, req.get_header_value("Authorization"), "http",
                                        [&req](const BodyLimits& limits) { return decode_body(req, limits); });
           std::optional<size_t> json_len;
           auto body = format_infer_response(resp, &json_len);
           if (json_len) {
             res.set_header("Inference-Header-Content-Length", std::to_string(*json_len));
             res.set_content(std::move(body), "application/octet-stream");
           } else {
             res.set_content(std::move(body), kJson);
           }
         }));
  // Labels for earlier answers (Bulwark extension): {"id": "...", "label": 3} or
  // {"id": "...", "labels": ["Coat", ...]} for a request of several rows. Role feedback.
  s.Post(R"(/v2/models/([^/]+)/feedback)", guarded([&core](const httplib::Request& req, httplib::Response& res) {
           const auto who = core.authorize(req.get_header_value("Authorization"), Role::kFeedback);
           if (req.body.size() > kMaxFeedbackBytes) throw invalid_argument("feedback body exceeds 1 MiB");
           json j;
           try {
             j = json::parse(req.body);
           } catch (const json::exception&) {
             throw invalid_argument("feedback body is not valid JSON");
           }
           if (!j.is_object()) throw invalid_argument("feedback body must be a JSON object");
           if (!j.contains("id") || !j["id"].is_string()) throw invalid_argument("id: a string is required");
           auto label_text = [](const json& v, const std::string& where) {
             if (v.is_string()) return v.get<std::string>();
             if (v.is_number_unsigned()) return std::to_string(v.get<uint64_t>());
             throw invalid_argument(where + ": a class index or name is required");
           };
           std::vector<std::string> labels;
           if (j.contains("label") == j.contains("labels")) throw invalid_argument("give exactly one of label, labels");
           if (j.contains("label")) {
             labels.push_back(label_text(j["label"], "label"));
           } else {
             if (!j["labels"].is_array()) throw invalid_argument("labels must be a list");
             for (size_t i = 0; i < j["labels"].size(); ++i) {
               labels.push_back(label_text(j["labels"][i], "labels[" + std::to_string(i) + "]"));
             }
           }
           const auto r = core.feedback(req.matches[1], j["id"].get<std::string>(), labels, who.token_id);
           send_json(res, 200, {{"id", j["id"]}, {"rows", r.rows}, {"correct", r.correct}, {"model_version", r.version}});
         }));
  s.Post("/v2/repository/index", guarded([&core](const httplib::Request& req, httplib::Response& res) {
           core.authorize_repository(req.get_header_value("Authorization"));
           json out = json::array();
           for (const auto& e : core.index()) {
             json row{{"name", e.name}, {"version", e.version}, {"state", e.state}};
             if (!e.reason.empty()) row["reason"] = e.reason;
             out.push_back(row);
           }
           send_json(res, 200, out);
         }));
  s.Post(R"(/v2/repository/models/([^/]+)/load)", guarded([&core](const httplib::Request& req, httplib::Response& res) {
           const auto who = core.authorize_repository(req.get_header_value("Authorization"));
           std::string path;
           if (!req.body.empty()) {
             json j;
             try {
               j = json::parse(req.body);
             } catch (const json::exception& e) {
               throw invalid_argument(std::string("load body is not valid JSON: ") + e.what());
             }
             if (!j.is_object()) throw invalid_argument("load body must be a JSON object");
             if (j.contains("parameters")) {
               const auto& p = j["parameters"];
               if (!p.is_object()) throw invalid_argument("parameters must be an object");
               if (p.contains("path")) {
                 if (!p["path"].is_string()) throw invalid_argument("parameters.path must be a string");
                 path = p["path"].get<std::string>();
               }
             }
           }
           const auto version = core.load_model_for_client(req.matches[1], path, who);
           send_json(res, 200, {{"name", req.matches[1].str()}, {"version", version}, {"state", "READY"}});
         }));
  s.Post(R"(/v2/repository/models/([^/]+)/unload)",
         guarded([&core](const httplib::Request& req, httplib::Response& res) {
           core.authorize_repository(req.get_header_value("Authorization"));
           core.unload_model(req.matches[1]);
           send_json(res, 200, json::object());
         }));
  s.Get("/v2/guard", guarded([&core](const httplib::Request& req, httplib::Response& res) {
          core.authorize_repository(req.get_header_value("Authorization"));
          send_json(res, 200, core.guard_status());
        }));
  s.Post("/v2/guard/harden", guarded([&core](const httplib::Request& req, httplib::Response& res) {
           const auto who = core.authorize_repository(req.get_header_value("Authorization"));
           send_json(res, 202, core.request_hardening("token:" + who.token_id));
         }));
  // {"decision": "keep" | "rollback"} for a candidate the watch holds. Admin.
  s.Post("/v2/guard/decide", guarded([&core](const httplib::Request& req, httplib::Response& res) {
           const auto who = core.authorize_repository(req.get_header_value("Authorization"));
           if (req.body.size() > 4096) throw invalid_argument("decide body exceeds 4 KiB");
           const auto j = json::parse(req.body, nullptr, false);
           if (!j.is_object() || !j.contains("decision") || !j["decision"].is_string()) {
             throw invalid_argument("decision: \"keep\" or \"rollback\" is required");
           }
           send_json(res, 202, core.decide("token:" + who.token_id, j["decision"].get<std::string>()));
         }));
  s.Get("/metrics", guarded([&core](const httplib::Request& req, httplib::Response& res) {
          res.set_content(core.render_metrics(req.get_header_value("Authorization")),
                          "text/plain; version=0.0.4; charset=utf-8");
        }));
}

}  // namespace bulwark::serve
