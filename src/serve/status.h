// serve/status.h — the one mapping from Bulwark's error kinds to transport statuses, used by
// both frontends (HTTP status codes; gRPC canonical codes as their numeric values).
#pragma once

#include "core/error.h"

namespace bulwark::serve {

int http_status(ErrorKind kind);
int grpc_code(ErrorKind kind);  // google.rpc.Code numbering (grpc::StatusCode has the same values)
// Short reason label used in metrics and the access log ("invalid_argument", "unavailable", ...).
const char* reason_label(ErrorKind kind);

}  // namespace bulwark::serve
