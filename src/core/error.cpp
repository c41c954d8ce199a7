#include "core/error.h"

namespace bulwark {

const char* to_string(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::kInvalidArgument: return "invalid argument";
    case ErrorKind::kNotFound: return "not found";
    case ErrorKind::kDataFormat: return "data format";
    case ErrorKind::kIo: return "i/o";
    case ErrorKind::kUnavailable: return "unavailable";
    case ErrorKind::kInternal: return "internal";
    case ErrorKind::kUnauthenticated: return "unauthenticated";
    case ErrorKind::kPermissionDenied: return "permission denied";
    case ErrorKind::kResourceExhausted: return "resource exhausted";
  }
  return "unknown";
}

}  // namespace bulwark
