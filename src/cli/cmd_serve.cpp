// bulwark serve — the V2 inference server; bulwark token — mint a bearer token for it.
// main only creates the core and the enabled frontends, then waits for signals (through a pipe): SIGHUP re-reads
// the config's models and tokens and reloads them (hot swap), SIGTERM/SIGINT drain and exit.
#include <fcntl.h>
#include <malloc.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>

#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <memory>

#include "cli/common.h"
#include "cli/serve_command.h"
#include "core/error.h"
#include "detect/detector.h"
#include "serve/auth.h"
#include "serve/config.h"
#include "serve/core.h"
#include "serve/grpc_frontend.h"
#include "serve/http_frontend.h"

namespace bulwark::cli {
namespace {



// The detection flags as GuardOptions (validated; errors name the flag).
void build_guard_options(ServeFlags& f) {
  auto& g = f.core.guard;
  g.calibration.clear();
  for (const auto& c : f.calibrations) {
    const auto eq = c.find('=');
    if (eq == std::string::npos || eq == 0 || eq + 1 == c.size()) {
      throw invalid_argument("--calibration must be NAME=FILE, got '" + c + "'");
    }
    g.calibration[c.substr(0, eq)] = c.substr(eq + 1);
  }
  g.detectors = f.detectors.empty() ? std::vector<std::string>{} : detect::parse_detector_list(f.detectors, "--detectors");
  g.expose = serve::parse_expose(f.expose_scores);
  g.stateful = f.stateful;
  g.stateful_options.hits_to_flag(f.stateful_hits)
      .hits_to_block(f.stateful_block_hits)
      .block_s(f.stateful_block_s)
      .max_clients(f.stateful_max_clients)
      .max_queries_per_client(f.stateful_max_queries)
      .distance(f.stateful_distance)
      .grid(f.stateful_grid);
  g.extraction = f.extraction;
  g.extraction_options.delta(f.extraction_delta)
      .min_distances(f.extraction_min_distances)
      .window(f.extraction_window)
      .max_set(f.extraction_max_set)
      .grid(f.extraction_grid)
      .confidence(f.extraction_confidence)
      .max_unsure_share(f.extraction_max_unsure_share)
      .min_answers(f.extraction_min_answers)
      .answer_window(f.extraction_answer_window)
      .block_s(f.extraction_block_s)
      .max_clients(f.extraction_max_clients);
  if (f.monitor != "on" && f.monitor != "off") throw invalid_argument("--monitor must be on or off");
  g.monitor = f.monitor == "on";
  g.monitor_options.arl0_hours(f.monitor_arl0_hours).expected_rate_hz(f.monitor_rate_hz);
  g.validate();
}

// Values from --config fill every flag not given on the command line.
void apply_config(CLI::App* cmd, const std::string& path, const std::string& section) {
  for (const auto& e : serve::load_config_file(path, section)) {
    CLI::Option* opt = nullptr;
    try {
      opt = cmd->get_option("--" + e.key);
    } catch (const CLI::OptionNotFound&) {
      throw invalid_argument(path + ": unknown key '" + e.key + "' (keys are serve's flag names without '--')");
    }
    if (e.key == "config") throw invalid_argument(path + ": 'config' cannot be set inside a config file");
    if (opt->count() > 0) continue;  // the command line wins
    for (const auto& v : e.values) opt->add_result(v);
    try {
      opt->run_callback();
    } catch (const CLI::ParseError& err) {
      throw invalid_argument(path + ": " + e.key + ": " + err.what());
    }
  }
}

// On SIGHUP: the config file's `model` and `tokens` entries as they are now, unless the command
// line gave them (it wins, as at start). Other keys need a restart (ports, threads, batching).
void reread_config(ServeFlags& f, bool models_on_cli, bool tokens_on_cli) {
  if (f.config.empty()) return;
  for (const auto& e : serve::load_config_file(f.config, f.config_section)) {
    if (e.key == "model" && !models_on_cli) f.models = e.values;
    if (e.key == "tokens" && !tokens_on_cli && !e.values.empty()) f.tokens = e.values.back();
  }
}

// Loads tokens and models as one change, at start and on SIGHUP: everything is checked before
// anything goes live, a failure keeps what was serving, and an unchanged model keeps its version.
void load_state(serve::InferenceCore& core, const ServeFlags& f) {
  std::vector<serve::ModelAssignment> models;
  for (const auto& m : f.models) {
    const auto [name, path] = serve::parse_model_arg(m);
    models.push_back({name, path});
  }
  const auto results = core.reload(f.tokens.empty() ? nullptr : serve::TokenStore::load(f.tokens), models);
  for (size_t i = 0; i < results.size(); ++i) {
    std::cerr << (results[i].changed ? "loaded" : "unchanged:") << " model '" << results[i].name << "' version "
              << results[i].version << " from " << models[i].reference << '\n';
  }
}

void warn_unsigned(const ServeFlags& f) {
  if (!f.core.source.allow_unsigned) return;
  std::cerr << "WARNING: --allow-unsigned: this server loads models without verifying a signature. Development "
               "only: bulwark_allow_unsigned is 1 in /metrics.\n";
  for (const auto& m : f.models) {
    if (!serve::is_registry_reference(serve::parse_model_arg(m).second)) {
      std::cerr << "WARNING: serving an UNSIGNED file: " << m << '\n';
    }
  }
}

void run_token(const std::string& id, const std::vector<std::string>& roles, double rate, const GlobalOptions& g) {
  if (id.empty()) throw invalid_argument("--id must not be empty");
  for (const auto& r : roles) serve::parse_role(r, "--roles");
  const auto token = serve::generate_token();
  const auto hash = serve::sha256_hex(token);
  std::string role_list;
  for (const auto& r : roles) role_list += (role_list.empty() ? "" : ", ") + r;
  std::string entry = "  - id: " + id + "\n    sha256: " + hash + "\n    roles: [" + role_list + "]\n";
  if (rate > 0) {
    char line[64];
    std::snprintf(line, sizeof line, "    rate_per_s: %g\n", rate);
    entry += line;
  }
  if (g.json) {
    std::cout << nlohmann::json{{"id", id}, {"token", token}, {"sha256", hash}, {"roles", roles}}.dump() << '\n';
    return;
  }
  std::cout << "token (give to the client; it is not stored anywhere):\n  " << token
            << "\n\nentry for the tokens file (under 'tokens:'):\n"
            << entry;
}

// The write end for the handler (a handler may only call async-signal-safe functions: write is).
int g_signal_write_fd = -1;

extern "C" void forward_signal(int sig) {
  const char c = static_cast<char>(sig);
  const int saved = errno;
  [[maybe_unused]] const auto n = ::write(g_signal_write_fd, &c, 1);
  errno = saved;
}

// SIGTERM, SIGINT and SIGHUP written into a pipe; returns its read end.
int install_signal_pipe() {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) throw io_error("cannot create the signal pipe");
  g_signal_write_fd = fds[1];
  struct sigaction sa {};
  sa.sa_handler = forward_signal;
  sa.sa_flags = SA_RESTART;
  sigemptyset(&sa.sa_mask);
  for (const int sig : {SIGTERM, SIGINT, SIGHUP}) ::sigaction(sig, &sa, nullptr);
  return fds[0];
}

// glibc gives each request thread its own malloc arena (up to 8 per core): a server with 100+
// threads then holds freed memory in dozens of arenas and grows for minutes under steady load (the
// soak bench: +10 % RSS in 10 min, no leak; with two arenas +4 %, flat after 3 min, same
// throughput). Two arenas unless the operator set MALLOC_ARENA_MAX or GLIBC_TUNABLES.
void limit_malloc_arenas() {
  if (std::getenv("MALLOC_ARENA_MAX") != nullptr || std::getenv("GLIBC_TUNABLES") != nullptr) return;
  ::mallopt(M_ARENA_MAX, 2);
}

}  // namespace

void run_serve(CLI::App* cmd, ServeFlags& f, const GlobalOptions& g, const Attach& attach) {
  limit_malloc_arenas();
  // Signals reach the loop below through a pipe, whichever thread the kernel delivers them to
  // (blocking them with sigwait missed threads some libraries start: a SIGHUP landing there ended
  // the process).
  const int signal_fd = install_signal_pipe();
  const bool models_on_cli = cmd->get_option("--model")->count() > 0;
  const bool tokens_on_cli = cmd->get_option("--tokens")->count() > 0;
  if (!f.config.empty()) apply_config(cmd, f.config, f.config_section);
  apply_threads(g);
  build_guard_options(f);
  if (f.models.empty()) throw invalid_argument("--model NAME=registry:MODEL@STAGE (or NAME=PATH) is required (at least one model)");
  if (f.http_port < 0 && f.grpc_port < 0) throw invalid_argument("--http-port and --grpc-port cannot both be off (-1)");

  serve::InferenceCore core(f.core);
  warn_unsigned(f);
  load_state(core, f);
  const std::shared_ptr<void> attached = attach ? attach(core, f) : nullptr;
  if (f.tokens.empty()) {
    std::cerr << "warning: no --tokens file: authentication is off; anyone may infer, nobody is admin\n";
  }
  if (f.core.batching.max_queue >= f.threads) {
    std::cerr << "warning: --max-queue " << f.core.batching.max_queue << " rows fills only with requests of several "
              << "rows: each waiting request holds one of the --threads " << f.threads << " request threads\n";
  }

  std::unique_ptr<serve::HttpFrontend> http;
  std::unique_ptr<serve::GrpcFrontend> grpc;
  if (f.http_port >= 0) {
    serve::HttpOptions o;
    o.host = f.host;
    o.port = f.http_port;
    o.threads = f.threads;
    o.max_connections = f.max_connections;
    o.max_connections_per_client = f.max_connections_per_client;
    o.max_body_bytes = f.max_body_bytes;
    o.tls_cert = f.tls_cert;
    o.tls_key = f.tls_key;
    http = std::make_unique<serve::HttpFrontend>(core, o);
    http->start();
  }
  if (f.grpc_port >= 0) {
    serve::GrpcOptions o;
    o.host = f.host;
    o.port = f.grpc_port;
    o.threads = f.threads;
    o.max_message_bytes = f.grpc_max_message_bytes;  // 0: sized to --max-batch rows of the served inputs
    o.max_batch_rows = f.core.batching.max_batch;
    o.memory_bytes = f.grpc_memory_bytes;
    o.tls_cert = f.tls_cert;
    o.tls_key = f.tls_key;
    grpc = std::make_unique<serve::GrpcFrontend>(core, o);
    grpc->start();
  }
  nlohmann::json j{{"http_port", http ? http->port() : -1}, {"grpc_port", grpc ? grpc->port() : -1},
                   {"grpc_max_message_bytes", grpc ? grpc->max_message_bytes() : 0},
                   {"grpc_memory_bytes", grpc ? grpc->memory_bytes() : 0},
                   {"host", f.host}, {"tls", !f.tls_cert.empty()}, {"auth", !f.tokens.empty()}};
  if (g.json) {
    std::cout << j.dump() << std::endl;
  } else {
    const std::string scheme = f.tls_cert.empty() ? "http" : "https";
    if (http) std::cout << "serving V2 REST on " << scheme << "://" << f.host << ':' << http->port() << '\n';
    if (grpc) std::cout << "serving V2 gRPC on " << f.host << ':' << grpc->port() << '\n';
    std::cout << std::flush;
  }

  for (;;) {
    int sig = 0;
    char c = 0;
    if (::read(signal_fd, &c, 1) != 1) continue;  // EINTR
    sig = static_cast<unsigned char>(c);
    if (sig == SIGHUP) {
      std::cerr << "SIGHUP: re-reading the config, reloading tokens and models\n";
      try {
        ServeFlags fresh = f;
        reread_config(fresh, models_on_cli, tokens_on_cli);
        load_state(core, fresh);
        f = fresh;
        core.audit("serve.reload", f.config.empty() ? "command line" : f.config, {{"ok", true}});
      } catch (const std::exception& e) {
        std::cerr << "reload failed, still serving what was loaded: " << e.what() << '\n';
        core.audit("serve.reload", f.config.empty() ? "command line" : f.config, {{"ok", false}, {"error", e.what()}});
      }
      continue;
    }
    std::cerr << (sig == SIGTERM ? "SIGTERM" : "SIGINT") << ": draining\n";
    core.begin_drain();
    if (http) http->stop();
    if (grpc) grpc->stop();
    std::cerr << "drained; bye\n";
    return;
  }
}

void add_serve_options(CLI::App* cmd, ServeFlags& f) {
  cmd->add_option("--model", f.models,
                  "NAME=registry:MODEL@STAGE (or @N), or NAME=PATH with --allow-unsigned (repeatable)");
  cmd->add_option("--registry", f.core.source.registry, "Registry for registry: references: a directory (SQLite) or postgresql://USER@HOST:PORT/DB?dir=SHARED_DIR");
  cmd->add_option("--trust-keys", f.core.source.trust_keys,
                  "With --registry: the public keys (a .pub file or a directory) whose model signatures and stage "
                  "changes are accepted, kept outside the registry (a read-only mount, a Secret)");
  cmd->add_option("--log-key", f.core.source.log_key,
                  "With --registry: the audit log's public key (a copy of the registry's log.pub kept outside it)");
  cmd->add_option("--audit-witness", f.core.source.audit_witness,
                  "With --registry: published checkpoints (audit checkpoint --publish) the audit log must be "
                  "consistent with before a stage change is followed");
  cmd->add_option("--model-root", f.core.source.model_root,
                  "Directory the repository API may load plain files from (relative paths only)");
  cmd->add_flag("--allow-unsigned", f.core.source.allow_unsigned,
                "Serve unsigned files (development only: logged and shown in /metrics)");
  cmd->add_option("--follow-interval-ms", f.core.source.follow_interval_ms,
                  "How often registry stage references are checked for a new version")
      ->capture_default_str();
  cmd->add_option("--host", f.host, "Address to listen on")->capture_default_str();
  cmd->add_option("--http-port", f.http_port, "REST port (0 = any free port, -1 = off)")->capture_default_str();
  cmd->add_option("--grpc-port", f.grpc_port, "gRPC port (0 = any free port, -1 = off)")->capture_default_str();
  cmd->add_option("--threads", f.threads,
                  "Request threads per frontend (REST: a connection holds one only while its request is answered)")
      ->capture_default_str();
  cmd->add_option("--max-connections", f.max_connections, "REST: open connections in all; more get 503")
      ->capture_default_str();
  cmd->add_option("--max-connections-per-client", f.max_connections_per_client,
                  "REST: open connections from one client address; more get 503 (0: no limit; behind a proxy, raise it)")
      ->capture_default_str();
  cmd->add_option("--max-batch", f.core.batching.max_batch,
                  "Rows per batched forward pass, and the most rows one request may carry")
      ->capture_default_str();
  cmd->add_option("--max-queue-delay-us", f.core.batching.max_queue_delay_us,
                  "How long the oldest queued request waits for a fuller batch")
      ->capture_default_str();
  cmd->add_option("--max-queue", f.core.batching.max_queue,
                  "Rows per model waiting or in a forward pass before answering 503")
      ->capture_default_str();
  cmd->add_option("--request-timeout-ms", f.core.request_timeout_ms,
                  "Longest a request may take from admission to answer (then 504 / DEADLINE_EXCEEDED)")
      ->capture_default_str();
  cmd->add_option("--drain-timeout-ms", f.core.batching.drain_timeout_ms,
                  "On shutdown or unload, how long to wait for a running forward pass")
      ->capture_default_str();
  cmd->add_option("--tokens", f.tokens, "Tokens file (YAML, hashed tokens with roles); none = auth off");
  cmd->add_option("--tls-cert", f.tls_cert, "PEM certificate: serve HTTPS and gRPC over TLS");
  cmd->add_option("--tls-key", f.tls_key, "PEM private key for --tls-cert");
  cmd->add_option("--config", f.config, "YAML file of flag values (flags given here win)");
  cmd->add_option("--guard", f.core.guard.scorer,
                  "Attack scorer for models without --calibration: max-softmax, entropy or none")
      ->capture_default_str();
  cmd->add_option("--guard-threshold", f.core.guard.threshold, "Flag inputs whose uncalibrated score exceeds this")
      ->capture_default_str();
  cmd->add_option("--calibration", f.calibrations, "NAME=FILE: the model's detector calibration (detect calibrate)");
  cmd->add_option("--detectors", f.detectors, "Subset of the calibrated detectors to run (default: all)");
  cmd->add_option("--expose-scores", f.expose_scores, "Who sees attack scores in responses: off, admin, all")
      ->capture_default_str();
  cmd->add_option("--stateful", f.stateful,
                  "Query-similarity detection per client: off, flag, throttle, block, escalate (throttle, then block)")
      ->capture_default_str();
  cmd->add_option("--stateful-hits", f.stateful_hits, "Near-duplicate hits that flag a client")->capture_default_str();
  cmd->add_option("--stateful-block-s", f.stateful_block_s, "How long a throttle or block lasts")->capture_default_str();
  cmd->add_option("--stateful-block-hits", f.stateful_block_hits,
                  "With --stateful escalate: hits within the hour that turn the throttle into a block")
      ->capture_default_str();
  cmd->add_option("--stateful-max-clients", f.stateful_max_clients, "Clients whose query history is kept")
      ->capture_default_str();
  cmd->add_option("--stateful-max-queries", f.stateful_max_queries, "Queries kept per client")->capture_default_str();
  cmd->add_option("--stateful-distance", f.stateful_distance,
                  "RMS distance (on the input's range) between a client's queries, in a --stateful-grid view, "
                  "that counts as a near-duplicate; 0 turns this noise-robust test off")
      ->capture_default_str();
  cmd->add_option("--stateful-grid", f.stateful_grid, "Cells per side of the distance test's low-resolution view")
      ->capture_default_str();
  cmd->add_option("--extraction", f.extraction,
                  "Model-extraction detection per client (PRADA distances, the model's unsure answers): off, flag, "
                  "throttle, block")
      ->capture_default_str();
  cmd->add_option("--extraction-delta", f.extraction_delta,
                  "PRADA: flag when the Shapiro-Wilk W of a client's query distances is below this; 0 turns PRADA off")
      ->capture_default_str();
  cmd->add_option("--extraction-min-distances", f.extraction_min_distances, "PRADA: distances before W is tested")
      ->capture_default_str();
  cmd->add_option("--extraction-window", f.extraction_window, "PRADA: the most recent distances tested")
      ->capture_default_str();
  cmd->add_option("--extraction-max-set", f.extraction_max_set, "PRADA: growing-set images kept per client")
      ->capture_default_str();
  cmd->add_option("--extraction-grid", f.extraction_grid, "PRADA: cells per side of the view distances are taken in")
      ->capture_default_str();
  cmd->add_option("--extraction-confidence", f.extraction_confidence,
                  "An answer whose top-class probability is below this is unsure")
      ->capture_default_str();
  cmd->add_option("--extraction-max-unsure-share", f.extraction_max_unsure_share,
                  "Flag a client when more of its recent answers were unsure; 1 turns this statistic off")
      ->capture_default_str();
  cmd->add_option("--extraction-min-answers", f.extraction_min_answers, "Answers before the unsure share is tested")
      ->capture_default_str();
  cmd->add_option("--extraction-answer-window", f.extraction_answer_window, "The most recent answers the share counts")
      ->capture_default_str();
  cmd->add_option("--extraction-block-s", f.extraction_block_s, "How long an extraction flag, throttle or block lasts")
      ->capture_default_str();
  cmd->add_option("--extraction-max-clients", f.extraction_max_clients, "Clients whose extraction history is kept")
      ->capture_default_str();
  cmd->add_option("--client-prefix-v4", f.core.guard.prefix_v4,
                  "Requests without a token count as one client per IPv4 network of this prefix length")
      ->capture_default_str();
  cmd->add_option("--client-prefix-v6", f.core.guard.prefix_v6,
                  "Requests without a token count as one client per IPv6 network of this prefix length")
      ->capture_default_str();
  cmd->add_option("--monitor", f.monitor, "Stream monitor for calibrated models: on or off")->capture_default_str();
  cmd->add_option("--monitor-arl0-hours", f.monitor_arl0_hours, "Mean time between false alarms on clean traffic")
      ->capture_default_str();
  cmd->add_option("--monitor-rate-hz", f.monitor_rate_hz, "Expected inputs per second (sets the alarm thresholds)")
      ->capture_default_str();
  cmd->add_option("--events", f.core.guard.events_path, "JSON-lines event log (alarms, flagged clients)");
  cmd->add_option("--feedback-capacity", f.core.guard.feedback_capacity,
                  "Answered request ids kept for labelled feedback (only while a token has the feedback role)")
      ->capture_default_str();
  cmd->add_option("--feedback-ttl-s", f.core.guard.feedback_ttl_s, "How long an answered id accepts feedback")
      ->capture_default_str();
  cmd->add_option("--max-body-bytes", f.max_body_bytes, "Largest request body (413 above)")->capture_default_str();
  cmd->add_option("--grpc-memory-bytes", f.grpc_memory_bytes,
                  "Memory all gRPC connections' buffers may hold at once; 0: 4 messages, at least 32 MiB")
      ->capture_default_str();
  cmd->add_option("--grpc-max-message-bytes", f.grpc_max_message_bytes,
                  "Largest gRPC message (refused before it is read); 0: --max-batch rows of the largest served input, "
                  "at least 1 MiB")
      ->capture_default_str();
  cmd->add_option("--max-elements", f.core.max_elements, "Largest input tensor, in elements")->capture_default_str();
  cmd->add_option("--access-log", f.core.access_log, "JSON-lines access log: a file, - (stderr) or off")
      ->capture_default_str();
}

void register_serve(CLI::App& app, GlobalOptions& g) {
  auto f = std::make_shared<ServeFlags>();
  auto* cmd = app.add_subcommand("serve", "Serve models over the KServe V2 protocol (REST and gRPC)");
  add_serve_options(cmd, *f);
  cmd->callback([cmd, f, &g] { run_serve(cmd, *f, g); });

  auto id = std::make_shared<std::string>();
  auto roles = std::make_shared<std::vector<std::string>>(std::vector<std::string>{"infer"});
  auto rate = std::make_shared<double>(0.0);
  auto* tok = app.add_subcommand("token", "Mint a bearer token and print its entry for the tokens file");
  tok->add_option("--id", *id, "Name the logs show for this token")->required();
  tok->add_option("--roles", *roles, "Roles: infer, feedback, admin")->delimiter(',')->capture_default_str();
  tok->add_option("--rate", *rate, "Requests per second (token bucket); 0 = unlimited")->capture_default_str();
  tok->callback([id, roles, rate, &g] { run_token(*id, *roles, *rate, g); });
}

}  // namespace bulwark::cli
