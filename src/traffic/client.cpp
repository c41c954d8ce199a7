#include "traffic/client.h"

#include <httplib.h>

#include <cctype>
#include <chrono>
#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>

#include "core/error.h"

namespace bulwark::traffic {
namespace {

using json = nlohmann::json;

Error url_error(const std::string& url, const std::string& why) {
  return invalid_argument("--url '" + url + "': " + why + " (expected http://HOST:PORT or https://HOST:PORT)");
}

void flatten_into(const json& v, std::vector<float>& out) {
  if (v.is_array()) {
    for (const auto& e : v) flatten_into(e, out);
  } else if (v.is_number()) {
    out.push_back(v.get<float>());
  } else {
    throw std::invalid_argument("logits hold a non-number");
  }
}

std::string server_error(int status, const std::string& body) {
  std::string msg = "HTTP " + std::to_string(status);
  const auto j = json::parse(body, nullptr, false);
  if (j.is_object() && j.contains("error") && j["error"].is_string()) msg += ": " + j["error"].get<std::string>();
  return msg;
}

httplib::Headers auth_headers(const std::string& token) {
  httplib::Headers h;
  if (!token.empty()) h.emplace("Authorization", "Bearer " + token);
  return h;
}

void set_timeouts(httplib::Client& c, double timeout_s) {
  const auto sec = static_cast<time_t>(timeout_s);
  const auto usec = static_cast<time_t>((timeout_s - static_cast<double>(sec)) * 1e6);
  c.set_connection_timeout(sec, usec);
  c.set_read_timeout(sec, usec);
  c.set_write_timeout(sec, usec);
}

}  // namespace

std::string Endpoint::origin() const { return scheme + "://" + host + ":" + std::to_string(port); }

Endpoint parse_url(const std::string& url) {
  Endpoint e;
  const size_t sep = url.find("://");
  if (sep == std::string::npos) throw url_error(url, "no scheme");
  e.scheme = url.substr(0, sep);
  if (e.scheme != "http" && e.scheme != "https") throw url_error(url, "scheme must be http or https");
  std::string rest = url.substr(sep + 3);
  if (!rest.empty() && rest.back() == '/') rest.pop_back();
  if (rest.find_first_of("/?#@") != std::string::npos) throw url_error(url, "no path, query or user info");
  std::string port_text;
  if (!rest.empty() && rest.front() == '[') {  // [::1]:8000
    const size_t close = rest.find(']');
    if (close == std::string::npos) throw url_error(url, "unclosed '[' in the host");
    e.host = rest.substr(1, close - 1);
    if (close + 1 < rest.size()) {
      if (rest[close + 1] != ':') throw url_error(url, "junk after the host");
      port_text = rest.substr(close + 2);
      if (port_text.empty()) throw url_error(url, "empty port");
    }
  } else {
    const size_t colon = rest.find(':');
    e.host = rest.substr(0, colon);
    if (colon != std::string::npos) {
      port_text = rest.substr(colon + 1);
      if (port_text.empty()) throw url_error(url, "empty port");
    }
  }
  if (e.host.empty()) throw url_error(url, "no host");
  for (char c : e.host) {
    const bool ok = std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' || c == ':';
    if (!ok) throw url_error(url, "bad character in the host");
  }
  e.port = e.scheme == "https" ? 443 : 80;
  if (!port_text.empty()) {
    if (port_text.size() > 5 || port_text.find_first_not_of("0123456789") != std::string::npos) {
      throw url_error(url, "port must be a number in 1..65535");
    }
    e.port = std::stoi(port_text);
    if (e.port < 1 || e.port > 65535) throw url_error(url, "port must be a number in 1..65535");
  }
  return e;
}

void check_model_name(const std::string& name) {
  if (name.empty() || name.size() > 256) throw invalid_argument("--model must be 1..256 characters");
  for (char c : name) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-')) {
      throw invalid_argument("--model '" + name + "': only letters, digits, '.', '_' and '-' (it goes into the URL)");
    }
  }
}

void ClientOptions::validate() const {
  parse_url(url);
  check_model_name(model);
  if (!(timeout_s >= 0.01 && timeout_s <= 3600)) throw invalid_argument("--timeout-s must be in [0.01, 3600]");
}

std::string encode_infer_request(const float* values, const std::vector<int64_t>& shape, size_t* json_length) {
  int64_t count = 1;
  for (int64_t d : shape) count *= d;
  const size_t bytes = static_cast<size_t>(count) * sizeof(float);
  const json j = {
      {"inputs",
       {{{"name", "input"}, {"shape", shape}, {"datatype", "FP32"}, {"parameters", {{"binary_data_size", bytes}}}}}},
      {"outputs", {{{"name", "logits"}}}}};
  std::string body = j.dump();
  *json_length = body.size();
  body.append(reinterpret_cast<const char*>(values), bytes);  // little-endian host, as the server assumes
  return body;
}

InferResult decode_infer_response(const std::string& body, size_t json_length) {
  InferResult r;
  const size_t n = json_length > 0 && json_length <= body.size() ? json_length : body.size();
  const auto j = json::parse(body.begin(), body.begin() + static_cast<std::ptrdiff_t>(n), nullptr, false);
  if (!j.is_object()) {
    r.error = "response is not a JSON object";
    return r;
  }
  if (j.contains("id") && j["id"].is_string()) r.id = j["id"].get<std::string>();
  if (j.contains("model_version") && j["model_version"].is_string())
    r.model_version = j["model_version"].get<std::string>();
  if (j.contains("parameters") && j["parameters"].is_object()) {
    const auto& p = j["parameters"];
    // Feedback names the server's id for the answer (the response's id echoes the request's own).
    if (p.contains("feedback_id") && p["feedback_id"].is_string()) r.id = p["feedback_id"].get<std::string>();
    if (p.contains("attack_flagged_count") && p["attack_flagged_count"].is_number_integer()) {
      r.flagged = p["attack_flagged_count"].get<int64_t>();
    } else if (p.contains("attack_flagged") && p["attack_flagged"].is_boolean()) {
      r.flagged = p["attack_flagged"].get<bool>() ? 1 : 0;
    }
  }
  const json* logits = nullptr;
  if (j.contains("outputs") && j["outputs"].is_array()) {
    for (const auto& o : j["outputs"]) {
      if (o.is_object() && o.contains("name") && o["name"] == "logits") logits = &o;
    }
  }
  if (!logits || !logits->contains("shape") || !logits->contains("data") || !(*logits)["shape"].is_array() ||
      (*logits)["shape"].size() != 2) {
    r.error = "response has no logits output of shape [rows, classes] in JSON";
    return r;
  }
  try {
    r.rows = (*logits)["shape"][0].get<int64_t>();
    r.classes = (*logits)["shape"][1].get<int64_t>();
    flatten_into((*logits)["data"], r.logits);
  } catch (const std::exception& e) {
    r.error = std::string("malformed logits: ") + e.what();
    return r;
  }
  if (r.rows < 1 || r.classes < 1 || static_cast<int64_t>(r.logits.size()) != r.rows * r.classes) {
    r.error = "logits hold " + std::to_string(r.logits.size()) + " values, not rows x classes";
    return r;
  }
  for (int64_t i = 0; i < r.rows; ++i) {
    const float* row = r.logits.data() + i * r.classes;
    int64_t best = 0;
    for (int64_t k = 1; k < r.classes; ++k) {
      if (row[k] > row[best]) best = k;
    }
    r.predicted.push_back(best);
  }
  r.ok = true;
  return r;
}

std::string encode_feedback(const std::string& id, const std::vector<int64_t>& labels) {
  return json{{"id", id}, {"labels", labels}}.dump();
}

V2Client::V2Client(ClientOptions options) : options_(std::move(options)) {
  options_.validate();
  http_ = std::make_unique<httplib::Client>(parse_url(options_.url).origin());
  http_->set_keep_alive(true);
  http_->set_tcp_nodelay(true);  // small request bodies otherwise wait on delayed ACKs (~40 ms)
  set_timeouts(*http_, options_.timeout_s);
}

V2Client::~V2Client() { stop(); }

void V2Client::stop() {
  if (http_) http_->stop();
}

InferResult V2Client::infer(const float* values, const std::vector<int64_t>& shape) {
  size_t json_length = 0;
  const std::string body = encode_infer_request(values, shape, &json_length);
  auto headers = auth_headers(options_.token);
  headers.emplace("Inference-Header-Content-Length", std::to_string(json_length));
  const auto start = std::chrono::steady_clock::now();
  const auto res =
      http_->Post(("/v2/models/" + options_.model + "/infer").c_str(), headers, body, "application/octet-stream");
  const double latency_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  InferResult r;
  if (!res) {
    r.error = "transport: " + httplib::to_string(res.error());
  } else if (res->status != 200) {
    r.status = res->status;
    r.error = server_error(res->status, res->body);
  } else {
    size_t header_len = 0;
    if (res->has_header("Inference-Header-Content-Length")) {
      header_len = std::strtoull(res->get_header_value("Inference-Header-Content-Length").c_str(), nullptr, 10);
    }
    r = decode_infer_response(res->body, header_len);
    r.status = 200;
  }
  r.latency_ms = latency_ms;
  return r;
}

std::string V2Client::feedback(const std::string& id, const std::vector<int64_t>& labels) {
  const auto res = http_->Post(("/v2/models/" + options_.model + "/feedback").c_str(),
                               auth_headers(options_.feedback_token), encode_feedback(id, labels), "application/json");
  if (!res) return "transport: " + httplib::to_string(res.error());
  if (res->status != 200) return server_error(res->status, res->body);
  return "";
}

}  // namespace bulwark::traffic
