#include "dist/config.h"

#include <cerrno>
#include <cmath>
#include <cstdlib>

#include "core/error.h"

namespace bulwark::dist {
namespace {

// A value and the name it came from ("RANK", "--dist-rank"), for messages.
struct Named {
  std::string name;
  std::string value;
};

std::optional<Named> first_of(const EnvLookup& env, std::initializer_list<const char*> names) {
  for (const char* n : names) {
    if (auto v = env(n); v && !v->empty()) return Named{n, *v};
  }
  return std::nullopt;
}

int64_t parse_int(const Named& v, int64_t lo, int64_t hi) {
  errno = 0;
  char* end = nullptr;
  const long long n = std::strtoll(v.value.c_str(), &end, 10);
  if (errno != 0 || end == v.value.c_str() || *end != '\0') {
    throw invalid_argument(v.name + "=" + v.value + " is not an integer");
  }
  if (n < lo || n > hi) {
    throw invalid_argument(v.name + "=" + v.value + " must be in " + std::to_string(lo) + ".." + std::to_string(hi));
  }
  return n;
}

std::optional<Named> flag_int(const char* name, int64_t v) {
  if (v < 0) return std::nullopt;
  return Named{name, std::to_string(v)};
}

}  // namespace

nlohmann::json Config::to_json() const {
  return {{"world_size", world_size},   {"rank", rank},           {"master_addr", master_addr},
          {"master_port", master_port}, {"timeout_s", timeout_s}, {"source", source}};
}

EnvLookup process_environment() {
  return [](const std::string& name) -> std::optional<std::string> {
    const char* v = std::getenv(name.c_str());
    if (!v) return std::nullopt;
    return std::string(v);
  };
}

Config resolve(const Flags& flags, const EnvLookup& env) {
  Config c;
  if (flags.timeout_s != Flags{}.timeout_s) {  // given
    if (!(flags.timeout_s > 0 && flags.timeout_s <= 86400 && std::isfinite(flags.timeout_s))) {
      throw invalid_argument("--dist-timeout-s must be in (0, 86400], got " + std::to_string(flags.timeout_s));
    }
    c.timeout_s = flags.timeout_s;
  }
  if (auto v = env("GLOO_SOCKET_IFNAME")) c.socket_ifname = *v;

  // Kubeflow Trainer's PET_NNODES is "N", or "MIN:MAX" under an elastic policy we do not follow.
  if (auto nn = first_of(env, {"PET_NNODES"}); nn && nn->value.find(':') != std::string::npos) {
    if (flags.world_size < 0 && !env("WORLD_SIZE")) {
      throw invalid_argument("PET_NNODES=" + nn->value +
                             ": elastic node ranges are not supported; give the job a fixed number of nodes");
    }
  }
  auto world = flag_int("--dist-world-size", flags.world_size);
  if (!world) world = first_of(env, {"WORLD_SIZE", "PET_NNODES"});
  if (!world) return c;  // no launcher around us: one process
  c.world_size = static_cast<int>(parse_int(*world, 1, 65536));
  c.source = world->name;
  if (!c.distributed()) return c;

  // PyTorchJob counts nprocPerNode processes per pod in WORLD_SIZE; torchrun would start them
  // (and set LOCAL_RANK), bulwark alone does not, so such a world would never assemble.
  if (world->name == "WORLD_SIZE" && !env("LOCAL_RANK")) {
    if (auto np = first_of(env, {"PET_NPROC_PER_NODE"})) {
      char* end = nullptr;
      const long n = std::strtol(np->value.c_str(), &end, 10);
      if (end != np->value.c_str() && *end == '\0' && n > 1) {
        throw invalid_argument("WORLD_SIZE=" + world->value + " counts PET_NPROC_PER_NODE=" + np->value +
                               " processes per pod, but bulwark runs one process per pod (use --threads for its "
                               "cores): set the job's nprocPerNode to 1, or launch bulwark under torchrun");
      }
    }
  }

  auto rank = flag_int("--dist-rank", flags.rank);
  if (!rank) rank = first_of(env, {"RANK", "PET_NODE_RANK"});
  if (!rank) {
    throw invalid_argument(world->name + "=" + world->value + " but no rank: set RANK (or PET_NODE_RANK, --dist-rank)");
  }
  c.rank = static_cast<int>(parse_int(*rank, 0, c.world_size - 1));
  c.source = world->name + "/" + rank->name;

  auto addr = flags.master_addr.empty() ? first_of(env, {"MASTER_ADDR", "PET_MASTER_ADDR"})
                                        : std::optional<Named>(Named{"--dist-master-addr", flags.master_addr});
  if (!addr) {
    throw invalid_argument(world->name + "=" + world->value +
                           " but no rendezvous address: set MASTER_ADDR (or PET_MASTER_ADDR, --dist-master-addr)");
  }
  c.master_addr = addr->value;
  auto port = flag_int("--dist-master-port", flags.master_port);
  if (!port) port = first_of(env, {"MASTER_PORT", "PET_MASTER_PORT"});
  if (port) c.master_port = static_cast<int>(parse_int(*port, 1, 65535));
  return c;
}

}  // namespace bulwark::dist
