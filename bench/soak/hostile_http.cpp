// bench/soak/hostile_http.cpp — the hostile REST clients (clients.h): authenticated but invalid or
// oversized requests, and unauthenticated ones with names the server never served; each must get
// its documented 4xx naming what is wrong.
#include <cstdint>

#include "clients.h"
#include "requests.h"

namespace bulwark::soak {
namespace {

httplib::Result send(httplib::Client& c, const HttpCase& k, const std::string& path) {
  auto headers = k.headers;
  if (!k.token.empty()) headers.emplace("Authorization", "Bearer " + k.token);
  if (k.method == "GET") return c.Get(path.c_str(), headers);
  return c.Post(path.c_str(), headers, k.body, "application/json");
}

// `previous`: the request before this one on the same connection (a transport error may be its doing).
void check_http(Soak& s, Tally& t, const HttpCase& k, const httplib::Result& r, const std::string& previous) {
  if (!r) {
    return s.record(t, k.kind, "transport " + httplib::to_string(r.error()), Verdict::kFailed,
                    "previous request on this keep-alive connection: " + previous);
  }
  const auto status = std::to_string(r->status);
  if (r->status != k.want) return s.record(t, k.kind, status, Verdict::kFailed, r->body);
  // A body refused unread ends the connection; a keep-alive client must be told, or its next
  // request goes out on a closed connection.
  if (r->status == 413 && r->get_header_value("Connection") != "close") {
    return s.record(t, k.kind, status + " without Connection: close", Verdict::kFailed,
                    "headers: Keep-Alive: " + r->get_header_value("Keep-Alive"));
  }
  if (r->status == 401 && r->get_header_value("WWW-Authenticate") != "Bearer") {
    return s.record(t, k.kind, status + " without WWW-Authenticate", Verdict::kFailed, r->body);
  }
  if (!contains(r->body, k.names)) {
    return s.record(t, k.kind, status + " not naming '" + k.names + "'", Verdict::kFailed, r->body);
  }
  s.record(t, k.kind, status, Verdict::kExpected);
}

}  // namespace

// Authenticated but wrong, or too big: 400/404/413 naming what is wrong.
std::vector<HttpCase> invalid_http_cases(const Workspace& w, std::mt19937_64& rng) {
  const auto one = image_values(1, rng);
  auto body_with = [&](json in) { return json{{"inputs", {in}}}.dump(); };
  auto in = [&](int rows, std::vector<float> data, const std::string& datatype = "FP32") {
    auto j = input_json(rows, datatype);
    j["data"] = std::move(data);
    return j;
  };
  auto shape = in(1, std::vector<float>(one.begin(), one.begin() + 756));
  shape["shape"] = {1, 1, 28, 27};
  json outputs = json::parse(json_body(one, 1));
  outputs["outputs"] = {{{"name", "secret_layer"}}};
  const auto [bin, bin_head] = binary_body(one, 1);
  const std::string big(static_cast<size_t>(kMaxBodyBytes) * 3 / 2, ' ');
  const std::string t = w.infer_token, infer = "/v2/models/good/infer";
  return {
      {"invalid/malformed-json", "POST", infer, t, R"({"inputs":[{"name":"input",)", {}, 400, "not valid JSON"},
      {"invalid/wrong-shape", "POST", infer, t, body_with(shape), {}, 400, "shape"},
      {"invalid/wrong-datatype", "POST", infer, t, body_with(in(1, one, "INT64")), {}, 400, "datatype"},
      {"invalid/value-count", "POST", infer, t, body_with(in(1, std::vector<float>(700, 0.5f))), {}, 400, "700"},
      {"invalid/out-of-range", "POST", infer, t, body_with(in(1, std::vector<float>(kValues, 2.0f))), {}, 400, "range"},
      {"invalid/unknown-output", "POST", infer, t, outputs.dump(), {}, 400, "secret_layer"},
      {"invalid/unknown-model", "POST", "/v2/models/nope-{n}/infer", t, json_body(one, 1), {}, 404, "nope-"},
      {"invalid/unknown-version",
       "POST",
       "/v2/models/good/versions/999999/infer",
       t,
       json_body(one, 1),
       {},
       404,
       "version"},
      {"invalid/binary-header-not-a-number",
       "POST",
       infer,
       t,
       bin,
       {{"Inference-Header-Content-Length", "abc"}},
       400,
       "Inference-Header-Content-Length"},
      {"invalid/binary-header-past-end",
       "POST",
       infer,
       t,
       bin,
       {{"Inference-Header-Content-Length", "999999"}},
       400,
       "Inference-Header-Content-Length"},
      {"invalid/unknown-route", "GET", "/v2/nothing-{n}", t, "", {}, 404, "no route"},
      {"oversized/too-many-rows",
       "POST",
       infer,
       t,
       json_body(image_values(kMaxBatch + 1, rng), kMaxBatch + 1),
       {},
       400,
       "rows"},
      {"oversized/values-past-shape",
       "POST",
       infer,
       t,
       body_with(in(1, std::vector<float>(static_cast<size_t>(kMaxBatch) * kValues + 4096, 0.5f))),
       {},
       400,
       "values"},
      {"oversized/body-over-limit", "POST", infer, t, big, {}, 413, "max-body-bytes"},
  };
}

// No token, a wrong one, a malformed header, or a token without the role; names the server never
// served, some not even UTF-8. 401 (with WWW-Authenticate) or 403, and no metric series.
std::vector<HttpCase> unauth_http_cases(const Workspace& w, std::mt19937_64& rng) {
  const auto body = json_body(image_values(1, rng), 1);
  const std::string wrong = "wrong-" + w.infer_token;
  return {
      {"unauth/no-token", "POST", "/v2/models/ghost-{n}/infer", "", "{", {}, 401, "token"},
      {"unauth/wrong-token", "POST", "/v2/models/ghost-{n}/infer", wrong, body, {}, 401, "token"},
      {"unauth/not-utf8-name", "POST", "/v2/models/%FF%FEghost-{n}/infer", "", "{", {}, 401, "token"},
      {"unauth/ghost-version", "POST", "/v2/models/good/versions/ghost-{n}/infer", wrong, body, {}, 401, "token"},
      {"unauth/basic-auth",
       "POST",
       "/v2/models/good/infer",
       "",
       body,
       {{"Authorization", "Basic Z2hvc3Q6eA=="}},
       401,
       "Bearer"},
      {"unauth/metadata", "GET", "/v2/models/ghost-{n}", "", "", {}, 401, "token"},
      {"unauth/load-without-admin",
       "POST",
       "/v2/repository/models/ghost-{n}/load",
       w.infer_token,
       R"({"parameters":{"path":"good-a.pt"}})",
       {},
       403,
       "admin"},
      {"unauth/index-no-token", "POST", "/v2/repository/index", "", "", {}, 401, "token"},
  };
}

// Hostile REST: the cases in turn; unauthenticated floods open a fresh connection now and then.
void hostile_rest(Soak& s, Tally& t, std::vector<HttpCase> cases, bool fresh_connections) {
  auto c = s.http("");
  std::string previous = "none";
  for (uint64_t i = 0; !s.stop_load; ++i) {
    const auto& k = cases[i % cases.size()];
    auto path = k.path;
    replace_all(path, "{n}", std::to_string(i));
    if (fresh_connections && i % 16 == 0) {
      auto fresh = s.http("");
      check_http(s, t, k, send(fresh, k, path), "none (a fresh connection)");
    } else {
      check_http(s, t, k, send(c, k, path), previous);
      previous = k.kind;
    }
  }
}

}  // namespace bulwark::soak
