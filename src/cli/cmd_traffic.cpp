// bulwark traffic — the load generator of the closed-loop experiment: replays labelled test images
// to a V2 endpoint in timed benign/attack phases, posts feedback, writes per-second JSON lines.
#include <cmath>
#include <atomic>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>

#include "cli/common.h"
#include "core/error.h"
#include "model/spec.h"
#include "traffic/traffic.h"

namespace bulwark::cli {
namespace {

struct TrafficFlags {
  traffic::TrafficOptions options;
  std::vector<std::string> phases;
  std::string attacker_model;
  std::string token_file, feedback_token_file;
  bool no_feedback = false;
  bool quiet = false;
  std::string input_shape;
};

// The non-empty lines of a secret file, without surrounding whitespace (at most 256); errors name
// the flag.
std::vector<std::string> read_token_lines(const std::string& path, const char* flag) {
  std::ifstream in(path);
  if (!in) throw not_found(std::string(flag) + ": cannot read '" + path + "'");
  std::vector<std::string> tokens;
  std::string line;
  while (std::getline(in, line)) {
    const auto first = line.find_first_not_of(" \t\r\n");
    if (first == std::string::npos) continue;
    line.erase(line.find_last_not_of(" \t\r\n") + 1);
    tokens.push_back(line.substr(first));
    if (tokens.size() > 256) throw invalid_argument(std::string(flag) + ": '" + path + "' holds more than 256 tokens");
  }
  if (tokens.empty()) throw invalid_argument(std::string(flag) + ": '" + path + "' holds no token");
  return tokens;
}

std::string read_token_file(const std::string& path, const char* flag) { return read_token_lines(path, flag).front(); }

std::string env_or_empty(const char* name) {
  const char* v = std::getenv(name);
  return v ? std::string(v) : std::string();
}

// Tokens never come from the command line (they would show in `ps`): files first, then the
// environment; the feedback token defaults to the inference token.
void resolve_tokens(const TrafficFlags& f, traffic::ClientOptions& c) {
  if (f.token_file.empty()) {
    c.token = env_or_empty("BULWARK_TOKEN");
  } else {
    c.tokens = read_token_lines(f.token_file, "--token-file");
    c.token = c.tokens.front();
    if (c.tokens.size() == 1) c.tokens.clear();
  }
  if (!f.feedback_token_file.empty()) {
    c.feedback_token = read_token_file(f.feedback_token_file, "--feedback-token-file");
  } else {
    const auto env = env_or_empty("BULWARK_FEEDBACK_TOKEN");
    c.feedback_token = env.empty() ? c.token : env;
  }
}

std::string ms_text(double v) {
  if (!std::isfinite(v)) return "-";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f", v);
  return buf;
}

std::string accuracy_text(double v, int64_t n) {
  return std::isfinite(v) ? percent(v, 1) + " (" + std::to_string(n) + ")" : "-";
}

void print_summary(const traffic::TrafficReport& r, const std::string& out) {
  std::vector<std::vector<std::string>> rows;
  for (const auto& p : r.phases) {
    std::string versions;
    for (const auto& v : p.versions) versions += (versions.empty() ? "" : ",") + v;
    char eps[32] = "-";
    if (p.kind != "benign") std::snprintf(eps, sizeof eps, "%g", p.eps_linf);
    rows.push_back({p.kind, eps, std::to_string(p.seconds) + "s", std::to_string(p.counters.sent),
                    std::to_string(p.counters.failed), accuracy_text(p.benign_accuracy(), p.counters.benign_n),
                    accuracy_text(p.attacked_accuracy(), p.counters.attacked_n), std::to_string(p.counters.flagged),
                    ms_text(p.latencies.percentile(0.5)), ms_text(p.latencies.percentile(0.99)),
                    versions.empty() ? "-" : versions});
  }
  std::printf("\n");
  print_table({"phase", "eps", "time", "sent", "failed", "benign acc", "attacked acc", "flagged", "p50 ms", "p99 ms",
               "versions"},
              rows);
  for (const auto& p : r.phases) {
    const auto& c = p.counters;
    if (c.backlog_dropped > 0 || c.late > 0) {
      std::printf(
          "! %s: the server fell behind: %lld sent late (worst %.0f ms), %lld never sent before the phase ended\n",
          p.kind.c_str(), static_cast<long long>(c.late), p.max_lag_ms, static_cast<long long>(c.backlog_dropped));
    }
    if (!p.first_error.empty()) std::printf("! %s: first failure: %s\n", p.kind.c_str(), p.first_error.c_str());
    if (c.feedback_failed > 0) {
      std::printf("! %s: %lld feedback posts failed, first: %s\n", p.kind.c_str(),
                  static_cast<long long>(c.feedback_failed), p.first_feedback_error.c_str());
    }
    if (p.kind == "square") {
      std::printf("  square: %lld image queries (%lld failed requests), %lld adversarials crafted during the phase\n",
                  static_cast<long long>(p.square_queries), static_cast<long long>(p.square_failed_queries),
                  static_cast<long long>(p.square_crafted));
    }
  }
  std::printf("\nper-second log: %s (%lld lines), seed %llu\n", out.c_str(), static_cast<long long>(r.seconds),
              static_cast<unsigned long long>(r.seed));
  std::fflush(stdout);
}

// SIGINT/SIGTERM end the run cleanly (the log stays whole): a signal handler may only touch a
// lock-free atomic, so the flag lives here for the process's lifetime.
std::shared_ptr<std::atomic<bool>> stop_flag() {
  static const auto flag = std::make_shared<std::atomic<bool>>(false);
  return flag;
}

extern "C" void on_stop_signal(int) { stop_flag()->store(true); }

void run_traffic_command(TrafficFlags& f, const GlobalOptions& g) {
  apply_threads(g);
  auto& o = f.options;
  // Everything is checked before data, models or the network are touched; errors name the flag.
  o.phases.clear();
  for (const auto& spec : f.phases) o.phases.push_back(traffic::parse_phase(spec));
  traffic::resolve_attacker_models(o.phases, f.attacker_model);
  o.seed = g.seed;
  o.feedback = !f.no_feedback;
  o.progress = !f.quiet;
  if (g.json && o.out == "-") throw invalid_argument("--out - and --json both want stdout; give --out a file");
  if (!f.input_shape.empty()) o.input_shape = model::parse_shape(f.input_shape, "--input-shape");
  o.validate();
  resolve_tokens(f, o.client);

  auto workload = traffic::prepare_workload(o);
  o.stop = stop_flag();
  std::signal(SIGINT, on_stop_signal);
  std::signal(SIGTERM, on_stop_signal);
  const auto report = traffic::run_traffic(workload, o);
  if (g.json) {
    auto j = report.to_json();
    j["url"] = o.client.url;
    j["model"] = o.client.model;
    j["dataset"] = workload.dataset;
    j["out"] = o.out;
    j["rate_per_s"] = o.rate_per_s;
    j["attacked_share"] = o.attacked_share;
    j["concurrency"] = o.concurrency;
    std::cout << j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) << std::endl;
  } else {
    print_summary(report, o.out == "-" ? "stdout" : o.out);
  }
  int64_t ok = 0;
  std::string first_error;
  for (const auto& p : report.phases) {
    ok += p.counters.ok;
    if (first_error.empty()) first_error = p.first_error;
  }
  if (ok == 0) throw unavailable("no request was answered (first failure: " + first_error + ")");
}

}  // namespace

void register_traffic(CLI::App& app, GlobalOptions& g) {
  auto flags = std::make_shared<TrafficFlags>();
  auto& o = flags->options;
  auto* cmd = app.add_subcommand("traffic",
                                 "Drive a V2 endpoint with timed benign and attacked traffic; log accuracy per second");
  cmd->add_option("--url", o.client.url, "Server base URL, e.g. http://127.0.0.1:8000")->required();
  cmd->add_option("--model", o.client.model, "Served model name")->required();
  cmd->add_option("--data", o.data, "Test split of: fashion-mnist, an IDX, CIFAR or .npz dataset, or an image folder "
                                    "(docs/data.md)")
      ->capture_default_str();
  cmd->add_option("--input-shape", flags->input_shape,
                  "C,H,W of the served model: image folders are converted and resized to it (V2 metadata shows it)");
  cmd->add_option("--phase", flags->phases,
                  "KIND:SECONDS[:EPS[:MODEL]], repeatable, run in order; KIND benign, fgsm, pgd (crafted against a "
                  "local model), square (queries the endpoint)")
      ->required();
  cmd->add_option("--attacker-model", flags->attacker_model,
                  "Local model (.pt) fgsm/pgd phases craft against, unless the phase names one");
  cmd->add_option("--rate", o.rate_per_s, "Requests per second, scheduled open-loop")->capture_default_str();
  cmd->add_option("--attacked-share", o.attacked_share, "Share of requests that are attacked in attack phases")
      ->capture_default_str();
  cmd->add_option("--concurrency", o.concurrency, "Worker threads (connections)")->capture_default_str();
  cmd->add_option("--out", o.out, "JSON-lines file, one line per second (- = stdout)")->required();
  cmd->add_option("--n", o.n, "Test images used")->capture_default_str();
  cmd->add_option("--offset", o.offset, "First test image used")->capture_default_str();
  cmd->add_option("--pgd-steps", o.pgd_steps, "PGD steps (transfer phases)")->capture_default_str();
  cmd->add_option("--square-queries", o.square_queries, "Square queries per image (square phases)")
      ->capture_default_str();
  cmd->add_option("--batch", o.craft_batch, "Images crafted together (memory bound)")->capture_default_str();
  cmd->add_option("--timeout-s", o.client.timeout_s, "Connect/read/write timeout per request")->capture_default_str();
  cmd->add_option("--token-file", flags->token_file, "Inference token file, one token per line (several: the workers take turns, as several clients); default env BULWARK_TOKEN");
  cmd->add_option("--feedback-token-file", flags->feedback_token_file,
                  "Feedback token file; default env BULWARK_FEEDBACK_TOKEN, else the inference token");
  cmd->add_flag("--no-feedback", flags->no_feedback, "Do not post the true labels");
  cmd->add_flag("--append", flags->options.append,
                "Append to --out, continuing its clock (one log across runs, for bulwark report)");
  cmd->add_flag("--quiet", flags->quiet, "No progress bars");
  cmd->callback([flags, &g] { run_traffic_command(*flags, g); });
}

}  // namespace bulwark::cli
