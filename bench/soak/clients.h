// bench/soak/clients.h — the load's clients. Each runs on a thread of its own with a Tally of its
// own, and loops until stop_load (the slow clients: stop_slow, which comes after the drain).
#pragma once

#include <httplib.h>

#include <random>
#include <string>
#include <vector>

#include "soak.h"

namespace bulwark::soak {

// valid.cpp: closed-loop valid inference, 1..4 rows, on the `good` model; 200/OK, or 503/UNAVAILABLE
// while the queue is full. `index` picks the client's seed.
void valid_rest(Soak& s, Tally& t, int index);  // JSON and binary bodies in turn
void valid_grpc(Soak& s, Tally& t, int index);

// hostile_http.cpp: a hostile REST request and what the docs say it gets. `{n}` in the path
// becomes a fresh number.
struct HttpCase {
  std::string kind, method, path, token, body;
  httplib::Headers headers;
  int want = 400;
  std::string names;  // the error body must contain this (the field, or the rule)
};
std::vector<HttpCase> invalid_http_cases(const Workspace& w, std::mt19937_64& rng);
std::vector<HttpCase> unauth_http_cases(const Workspace& w, std::mt19937_64& rng);
void hostile_rest(Soak& s, Tally& t, std::vector<HttpCase> cases, bool fresh_connections);

// hostile_grpc.cpp: invalid and oversized (index 0) or unauthenticated (index 1) gRPC calls.
void hostile_grpc(Soak& s, Tally& t, int index);

// flaky.cpp: the model that throws on some inputs; a generic 500/INTERNAL, else 200/OK.
void flaky(Soak& s, Tally& t);

// rate_limited.cpp: the rate-limited token at about twice its rate; 200, or 429 with Retry-After.
void rate_limited(Soak& s, Tally& t);

// swapper.cpp: a hot swap every kSwapEveryS, by SIGHUP and by admin load in turn.
void swapper(Soak& s, Tally& t);

// slow.cpp: raw sockets sending headers or a body a byte a second, or holding a connection idle.
enum class Slow { kHeaders, kBody, kIdle };
void slow_client(Soak& s, Tally& t, Slow mode);

}  // namespace bulwark::soak
