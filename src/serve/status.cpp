#include "serve/status.h"

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

}  // namespace bulwark::serve
