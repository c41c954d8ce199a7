// core/error.h — the one error type every Bulwark module throws and every frontend maps once
// (CLI exit codes here; HTTP/gRPC statuses in serve). Messages name the thing that is wrong
// (file, flag, field) and the limit it broke.
#pragma once

#include <stdexcept>
#include <string>

namespace bulwark {

enum class ErrorKind {
  kInvalidArgument,  // the caller asked for something impossible: bad flag, value out of range
  kNotFound,         // a file, model or version that does not exist
  kDataFormat,       // a file exists but its contents are malformed
  kIo,               // the operating system refused a read or write
  kUnavailable,      // temporarily cannot serve (queue full, draining)
  kInternal,         // a bug or an unexpected library failure
  kUnauthenticated,  // no credentials, or credentials we do not know
  kPermissionDenied, // known credentials without the role the operation needs
  kResourceExhausted,  // a rate limit or size limit; retrying later may succeed
};

const char* to_string(ErrorKind kind);

class Error : public std::runtime_error {
 public:
  Error(ErrorKind kind, const std::string& message) : std::runtime_error(message), kind_(kind) {}
  ErrorKind kind() const { return kind_; }

 private:
  ErrorKind kind_;
};

inline Error invalid_argument(const std::string& what) { return Error(ErrorKind::kInvalidArgument, what); }
inline Error not_found(const std::string& what) { return Error(ErrorKind::kNotFound, what); }
inline Error data_format(const std::string& what) { return Error(ErrorKind::kDataFormat, what); }
inline Error io_error(const std::string& what) { return Error(ErrorKind::kIo, what); }
inline Error unavailable(const std::string& what) { return Error(ErrorKind::kUnavailable, what); }
inline Error internal_error(const std::string& what) { return Error(ErrorKind::kInternal, what); }

}  // namespace bulwark
