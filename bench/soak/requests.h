// bench/soak/requests.h — how the soak's clients build and send requests: image tensors that
// never trip the flaky model, REST bodies (JSON and Triton's binary extension), gRPC requests and
// their status names, and raw loopback sockets for the slow clients and the drain probes.
#pragma once

#include <grpcpp/grpcpp.h>

#include <cstddef>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "grpc_predict_v2.grpc.pb.h"
#include "soak.h"

namespace bulwark::soak {

// `rows` Fashion-MNIST-shaped images, values below kTrip.
std::vector<float> image_values(int rows, std::mt19937_64& rng);

// The V2 "input" tensor's header: name, shape [rows, 1, 28, 28] and datatype, no data.
json input_json(int rows, const std::string& datatype = "FP32");
std::string json_body(const std::vector<float>& values, int rows);
// Triton's binary extension: the JSON header, then the raw tensor; the header's length second.
std::pair<std::string, size_t> binary_body(const std::vector<float>& values, int rows);

inference::ModelInferRequest grpc_request(const std::string& model, const std::vector<float>& values, int rows);
const char* code_name(grpc::StatusCode c);
// A 30 s deadline, and the bearer token unless it is empty.
void set_call(grpc::ClientContext& ctx, const std::string& token);

// A connected TCP socket to 127.0.0.1:port, or -1 with errno set.
int connect_loopback(int port);
bool send_all(int fd, const std::string& bytes);

}  // namespace bulwark::soak
