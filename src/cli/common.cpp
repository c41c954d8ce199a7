#include "cli/common.h"

#include <torch/torch.h>

#include <cstdio>
#include <cstdlib>
#include <iostream>

#include "core/system.h"
#include "core/version.h"
#include "dist/group.h"

namespace bulwark::cli {

namespace {

int default_threads() {
  // As PyTorch does: OMP_NUM_THREADS, when set to a positive whole number, is the default.
  if (const char* v = std::getenv("OMP_NUM_THREADS")) {
    char* end = nullptr;
    const long n = std::strtol(v, &end, 10);
    if (end != v && *end == '\0' && n >= 1 && n <= 1024) return static_cast<int>(n);
  }
  return hardware_threads();
}

}  // namespace

void apply_threads(const GlobalOptions& g) { torch::set_num_threads(g.threads > 0 ? g.threads : default_threads()); }

void print_result(const GlobalOptions& g, const nlohmann::json& j,
                  const std::vector<std::pair<std::string, std::string>>& rows) {
  if (g.json) {
    std::cout << j.dump(2) << std::endl;
    return;
  }
  size_t width = 0;
  for (const auto& r : rows) width = std::max(width, r.first.size());
  for (const auto& r : rows) std::cout << r.first << std::string(width - r.first.size() + 2, ' ') << r.second << '\n';
  std::cout << std::flush;
}

void print_table(const std::vector<std::string>& header, const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> width(header.size(), 0);
  for (size_t c = 0; c < header.size(); ++c) width[c] = header[c].size();
  for (const auto& r : rows) {
    for (size_t c = 0; c < r.size() && c < width.size(); ++c) width[c] = std::max(width[c], r[c].size());
  }
  const auto line = [&width](const std::vector<std::string>& cells) {
    for (size_t c = 0; c < cells.size() && c < width.size(); ++c) {
      std::cout << cells[c] << (c + 1 < cells.size() ? std::string(width[c] - cells[c].size() + 2, ' ') : "");
    }
    std::cout << '\n';
  };
  line(header);
  for (const auto& r : rows) line(r);
  std::cout << std::flush;
}

void add_dist_options(CLI::App* cmd, dist::Flags& f) {
  const std::string g = "Data-parallel (default: MASTER_ADDR, MASTER_PORT, WORLD_SIZE, RANK, else PET_*)";
  cmd->add_option("--dist-master-addr", f.master_addr, "Address of rank 0's rendezvous (MASTER_ADDR)")->group(g);
  cmd->add_option("--dist-master-port", f.master_port, "Port of rank 0's rendezvous (MASTER_PORT; default 29500)")
      ->check(CLI::Range(1, 65535))
      ->group(g);
  cmd->add_option("--dist-world-size", f.world_size, "Number of ranks (WORLD_SIZE); 1 = this process alone")
      ->check(CLI::Range(1, 65536))
      ->group(g);
  cmd->add_option("--dist-rank", f.rank, "This process's rank, 0..world-1 (RANK)")
      ->check(CLI::NonNegativeNumber)
      ->group(g);
  cmd->add_option("--dist-timeout-s", f.timeout_s,
                  "Longest wait for a peer in any exchange, then every rank exits 1 (default 600)")
      ->group(g);
}

std::shared_ptr<dist::Group> join_process_group(const dist::Flags& flags, bool verbose) {
  const dist::Config c = dist::resolve(flags, dist::process_environment());
  if (!c.distributed()) return nullptr;
  if (verbose) {
    std::cerr << "rank " << c.rank << " of " << c.world_size << " (" << c.source << "): rendezvous at "
              << c.master_addr << ":" << c.master_port << std::endl;
  }
  return dist::Group::connect(c);
}

void finish_rank(const std::shared_ptr<dist::Group>& group) {
  if (!group) return;
  group->barrier("waiting for rank 0 to evaluate and save the model");
  if (group->rank() != 0) {
    std::cerr << "rank " << group->rank() << " of " << group->world_size() << ": done (rank 0 saved the model)"
              << std::endl;
  }
}

std::string ranks_text(int world_size, double communication_seconds, double seconds) {
  char buf[128];
  std::snprintf(buf, sizeof buf, "%d (data-parallel; %.1f s of %.1f s exchanging gradients)", world_size,
                communication_seconds, seconds);
  return buf;
}

std::string percent(double fraction, int decimals) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.*f%%", decimals, 100.0 * fraction);
  return buf;
}

std::string with_commas(int64_t n) {
  std::string s = std::to_string(n < 0 ? -n : n);
  for (int i = static_cast<int>(s.size()) - 3; i > 0; i -= 3) s.insert(static_cast<size_t>(i), ",");
  return (n < 0 ? "-" : "") + s;
}

std::string version_text() {
  return std::string("bulwark ") + BULWARK_VERSION + "\nlibtorch " + TORCH_VERSION + " (CPU, " +
         std::to_string(at::get_num_threads()) + " threads)\nblas " + loaded_blas() + "\n";
}

}  // namespace bulwark::cli
