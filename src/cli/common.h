// cli/common.h — what every subcommand shares: global flags, output, and the exit-code contract
// (0 ok, 1 failure, 2 bad usage).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "dist/config.h"

namespace bulwark::dist {
class Group;
}

namespace bulwark::cli {

struct GlobalOptions {
  bool json = false;
  uint64_t seed = 0;
  int threads = 0;  // 0 = all cores
  std::string command_line;  // argv as typed, for run records
};

// Applies --threads to LibTorch's intra-op pool.
void apply_threads(const GlobalOptions& g);

// Prints `j` (with --json) or the human rows as an aligned two-column table.
void print_result(const GlobalOptions& g, const nlohmann::json& j,
                  const std::vector<std::pair<std::string, std::string>>& rows);

// Prints a table with a header row, columns aligned (human output of list commands).
void print_table(const std::vector<std::string>& header, const std::vector<std::vector<std::string>>& rows);

// --dist-master-addr, --dist-master-port, --dist-world-size, --dist-rank, --dist-timeout-s (train, harden).
void add_dist_options(CLI::App* cmd, dist::Flags& flags);
// Joins the data-parallel job the flags or the launcher's variables describe (dist/config.h);
// null when the job is this one process.
std::shared_ptr<dist::Group> join_process_group(const dist::Flags& flags, bool verbose);
// Ranks other than 0 wait here, and rank 0 arrives after it wrote its results, so every rank
// exits 1 if rank 0 failed; then non-zero ranks say so on stderr (stdout stays rank 0's).
void finish_rank(const std::shared_ptr<dist::Group>& group);
// "2 (data-parallel; 3.1 s of 40 s exchanging gradients)", for the summary table.
std::string ranks_text(int world_size, double communication_seconds, double seconds);

std::string percent(double fraction, int decimals = 2);
std::string with_commas(int64_t n);

// Each subcommand registers itself; the callback runs after parsing succeeds.
void register_train(CLI::App& app, GlobalOptions& g);
void register_eval(CLI::App& app, GlobalOptions& g);
void register_info(CLI::App& app, GlobalOptions& g);
void register_import(CLI::App& app, GlobalOptions& g);
void register_attack(CLI::App& app, GlobalOptions& g);
void register_harden(CLI::App& app, GlobalOptions& g);
void register_serve(CLI::App& app, GlobalOptions& g);  // and `token`
void register_detect(CLI::App& app, GlobalOptions& g);
void register_registry(CLI::App& app, GlobalOptions& g);  // and `keys`
void register_audit(CLI::App& app, GlobalOptions& g);     // and `runs`
void register_guard(CLI::App& app, GlobalOptions& g);
void register_report(CLI::App& app, GlobalOptions& g);
void register_traffic(CLI::App& app, GlobalOptions& g);
void register_deploy(CLI::App& app, GlobalOptions& g);
void register_privacy(CLI::App& app, GlobalOptions& g);
void register_poison(CLI::App& app, GlobalOptions& g);

std::string version_text();

}  // namespace bulwark::cli
