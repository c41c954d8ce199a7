#include "serve/status.h"

#include <iostream>

#include "core/digest.h"

namespace bulwark::serve {

int http_status(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::kInvalidArgument: return 400;
    case ErrorKind::kDataFormat: return 400;
    case ErrorKind::kUnauthenticated: return 401;
    case ErrorKind::kPermissionDenied: return 403;
    case ErrorKind::kNotFound: return 404;
    case ErrorKind::kResourceExhausted: return 429;
    case ErrorKind::kUnavailable: return 503;
    case ErrorKind::kIo: return 500;
    case ErrorKind::kInternal: return 500;
  }
  return 500;
}

int grpc_code(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::kInvalidArgument: return 3;   // INVALID_ARGUMENT
    case ErrorKind::kDataFormat: return 3;
    case ErrorKind::kNotFound: return 5;          // NOT_FOUND
    case ErrorKind::kPermissionDenied: return 7;  // PERMISSION_DENIED
    case ErrorKind::kResourceExhausted: return 8; // RESOURCE_EXHAUSTED
    case ErrorKind::kIo: return 13;               // INTERNAL
    case ErrorKind::kInternal: return 13;
    case ErrorKind::kUnavailable: return 14;      // UNAVAILABLE
    case ErrorKind::kUnauthenticated: return 16;  // UNAUTHENTICATED
  }
  return 13;
}

const char* reason_label(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::kInvalidArgument: return "invalid_argument";
    case ErrorKind::kDataFormat: return "invalid_argument";
    case ErrorKind::kUnauthenticated: return "unauthenticated";
    case ErrorKind::kPermissionDenied: return "permission_denied";
    case ErrorKind::kNotFound: return "not_found";
    case ErrorKind::kResourceExhausted: return "rate_limited";
    case ErrorKind::kUnavailable: return "unavailable";
    case ErrorKind::kIo: return "internal";
    case ErrorKind::kInternal: return "internal";
  }
  return "internal";
}

int http_status(const Error& e) {
  return dynamic_cast<const DeadlineExceededError*>(&e) ? 504 : http_status(e.kind());
}

int grpc_code(const Error& e) {
  return dynamic_cast<const DeadlineExceededError*>(&e) ? 4 : grpc_code(e.kind());  // DEADLINE_EXCEEDED
}

const char* reason_label(const Error& e) {
  return dynamic_cast<const DeadlineExceededError*>(&e) ? "deadline_exceeded" : reason_label(e.kind());
}

std::string internal_error_message(const std::string& request_id, const std::string& detail) {
  const std::string incident = request_id.empty() ? "incident " + random_hex(4) : "request " + request_id;
  std::cerr << ("bulwark serve: internal error (" + incident + "): " + detail + "\n");
  return "internal error (" + incident + "); the server's log has the detail";
}

}  // namespace bulwark::serve
