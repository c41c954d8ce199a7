// cli/serve_command.h — `bulwark serve`'s flags and run loop, shared with `bulwark guard`, which
// is the same server with the closed-loop controller attached.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "cli/common.h"
#include "serve/core.h"

namespace bulwark::cli {

struct ServeFlags {
  std::vector<std::string> models;  // NAME=PATH
  std::string host = "127.0.0.1";
  int http_port = 8000;
  int grpc_port = 8001;
  int threads = 128;  // above the default --max-queue (64 rows), so the queue can fill
  std::string tokens;
  std::string tls_cert, tls_key;
  std::string config;
  std::string config_section;  // "" for serve; "serve" inside guard.yaml
  uint64_t max_body_bytes = 64u << 20;
  int grpc_max_message_bytes = 0;
  int64_t grpc_memory_bytes = 0;
  size_t max_connections = 4096, max_connections_per_client = 256;
  serve::CoreOptions core;
  // Detection (built into core.guard by guard_options()).
  std::vector<std::string> calibrations;  // NAME=FILE
  std::string detectors;
  std::string expose_scores = "admin";
  std::string stateful = "off";
  int stateful_hits = 3;
  int stateful_block_hits = 10;
  double stateful_block_s = 600;
  int64_t stateful_max_clients = 256;
  int64_t stateful_max_queries = 1000;
  double stateful_distance = 0.025;
  int stateful_grid = 14;
  // --extraction-*: defaults are ExtractionOptions' own (detect/extraction.h).
  std::string extraction = "off";
  double extraction_delta = detect::ExtractionOptions().delta();
  int extraction_min_distances = detect::ExtractionOptions().min_distances();
  int extraction_window = detect::ExtractionOptions().window();
  int extraction_max_set = detect::ExtractionOptions().max_set();
  int extraction_grid = detect::ExtractionOptions().grid();
  double extraction_confidence = detect::ExtractionOptions().confidence();
  double extraction_max_unsure_share = detect::ExtractionOptions().max_unsure_share();
  int extraction_min_answers = detect::ExtractionOptions().min_answers();
  int extraction_answer_window = detect::ExtractionOptions().answer_window();
  double extraction_block_s = detect::ExtractionOptions().block_s();
  int64_t extraction_max_clients = detect::ExtractionOptions().max_clients();
  std::string monitor = "on";
  double monitor_arl0_hours = 24;
  double monitor_rate_hz = 50;
};

// Adds every serve flag to `cmd`, bound to `f`.
void add_serve_options(CLI::App* cmd, ServeFlags& f);

// Runs after the models are loaded and before the frontends start; what it returns lives until
// the server has drained (the guard's controller).
using Attach = std::function<std::shared_ptr<void>(serve::InferenceCore& core, const ServeFlags& f)>;

// Applies --config, starts the core, the frontends and `attach`, then serves until SIGTERM/SIGINT.
void run_serve(CLI::App* cmd, ServeFlags& f, const GlobalOptions& g, const Attach& attach = {});

}  // namespace bulwark::cli
