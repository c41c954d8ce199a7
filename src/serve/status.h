// serve/status.h — the one mapping from Bulwark's error kinds to transport statuses, used by
// both frontends (HTTP status codes; gRPC canonical codes as their numeric values), and what a
// client is told about an error.
#pragma once

#include <string>

#include "core/error.h"

namespace bulwark::serve {

// A request that ran out of time (--request-timeout-ms): 504 / DEADLINE_EXCEEDED. Its kind is
// kUnavailable, so code that only knows kinds treats it as "try again later".
class DeadlineExceededError : public Error {
 public:
  explicit DeadlineExceededError(const std::string& what) : Error(ErrorKind::kUnavailable, what) {}
};

int http_status(ErrorKind kind);
int grpc_code(ErrorKind kind);  // google.rpc.Code numbering (grpc::StatusCode has the same values)
// Short reason label used in metrics and the access log ("invalid_argument", "unavailable", ...).
const char* reason_label(ErrorKind kind);

// The same for a thrown error: as its kind, except DeadlineExceededError (504, 4, "deadline_exceeded").
int http_status(const Error& e);
int grpc_code(const Error& e);
const char* reason_label(const Error& e);

// What the client is told about an internal failure (a LibTorch error, a bug): never its what()
// (stack traces, TorchScript source, paths), only that it happened and what to quote. Writes the
// detail to stderr under the request id, or under a random incident id when `request_id` is empty.
std::string internal_error_message(const std::string& request_id, const std::string& detail);

}  // namespace bulwark::serve
