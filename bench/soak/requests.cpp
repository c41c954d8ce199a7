// bench/soak/requests.cpp — request builders and raw sockets shared by the soak's clients
// (requests.h).
#include "requests.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <map>

namespace bulwark::soak {

std::vector<float> image_values(int rows, std::mt19937_64& rng) {
  std::uniform_real_distribution<float> u(0.0f, kTrip - 0.01f);  // never trips the flaky model
  std::vector<float> v(static_cast<size_t>(rows) * kValues);
  for (auto& x : v) x = u(rng);
  return v;
}

json input_json(int rows, const std::string& datatype) {
  return {{"name", "input"}, {"shape", {rows, 1, 28, 28}}, {"datatype", datatype}};
}

std::string json_body(const std::vector<float>& values, int rows) {
  auto in = input_json(rows);
  in["data"] = values;
  return json{{"inputs", {in}}}.dump();
}

std::pair<std::string, size_t> binary_body(const std::vector<float>& values, int rows) {
  auto in = input_json(rows);
  in["parameters"] = {{"binary_data_size", values.size() * 4}};
  const auto head = json{{"inputs", {in}}}.dump();
  return {head + std::string(reinterpret_cast<const char*>(values.data()), values.size() * 4), head.size()};
}

inference::ModelInferRequest grpc_request(const std::string& model, const std::vector<float>& values, int rows) {
  inference::ModelInferRequest q;
  q.set_model_name(model);
  auto* in = q.add_inputs();
  in->set_name("input");
  in->set_datatype("FP32");
  for (const int64_t d : {static_cast<int64_t>(rows), int64_t{1}, int64_t{28}, int64_t{28}}) in->add_shape(d);
  q.add_raw_input_contents(std::string(reinterpret_cast<const char*>(values.data()), values.size() * 4));
  return q;
}

const char* code_name(grpc::StatusCode c) {
  static const std::map<grpc::StatusCode, const char*> names = {{grpc::OK, "OK"},
                                                                {grpc::CANCELLED, "CANCELLED"},
                                                                {grpc::UNKNOWN, "UNKNOWN"},
                                                                {grpc::INVALID_ARGUMENT, "INVALID_ARGUMENT"},
                                                                {grpc::DEADLINE_EXCEEDED, "DEADLINE_EXCEEDED"},
                                                                {grpc::NOT_FOUND, "NOT_FOUND"},
                                                                {grpc::PERMISSION_DENIED, "PERMISSION_DENIED"},
                                                                {grpc::RESOURCE_EXHAUSTED, "RESOURCE_EXHAUSTED"},
                                                                {grpc::INTERNAL, "INTERNAL"},
                                                                {grpc::UNAVAILABLE, "UNAVAILABLE"},
                                                                {grpc::UNAUTHENTICATED, "UNAUTHENTICATED"}};
  const auto it = names.find(c);
  return it == names.end() ? "OTHER" : it->second;
}

void set_call(grpc::ClientContext& ctx, const std::string& token) {
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  if (!token.empty()) ctx.AddMetadata("authorization", "Bearer " + token);
}

int connect_loopback(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    const int e = errno;
    ::close(fd);
    errno = e;
    return -1;
  }
  return fd;
}

bool send_all(int fd, const std::string& bytes) {
  for (size_t off = 0; off < bytes.size();) {
    const auto n = ::send(fd, bytes.data() + off, bytes.size() - off, MSG_NOSIGNAL);
    if (n <= 0) return false;
    off += static_cast<size_t>(n);
  }
  return true;
}

}  // namespace bulwark::soak
