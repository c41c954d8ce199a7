#include "dist/group.h"

// Debian's TorchConfig.cmake does not pass on the USE_C10D_GLOO its libtorch_cpu was built with;
// without it ProcessGroupGloo.hpp declares nothing.
#ifndef USE_C10D_GLOO
#define USE_C10D_GLOO
#endif
#include <c10/util/Exception.h>

#include <chrono>
#include <cstdio>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include "core/error.h"

namespace bulwark::dist {
namespace {

std::chrono::milliseconds timeout_of(const Config& c) {
  return std::chrono::milliseconds(static_cast<int64_t>(c.timeout_s * 1000.0));
}

bool is_loopback(const std::string& addr) { return addr == "localhost" || addr == "::1" || addr.rfind("127.", 0) == 0; }

// Which address Gloo's sockets bind: GLOO_SOCKET_IFNAME as in PyTorch; loopback when the job is
// on loopback; else the address this host's name resolves to (a pod's IP).
std::shared_ptr<::gloo::transport::Device> make_device(const Config& c) {
  if (!c.socket_ifname.empty()) return c10d::ProcessGroupGloo::createDeviceForInterface(c.socket_ifname);
  if (is_loopback(c.master_addr)) return c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1");
  return c10d::ProcessGroupGloo::createDefaultDevice();
}

std::string detail_of(const std::exception& e) {
  if (const auto* c10 = dynamic_cast<const c10::Error*>(&e)) return c10->what_without_backtrace();
  return e.what();
}

std::string seconds_text(double s) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g s", s);
  return buf;
}

// "rank 1 of 2: all-reduce of gradients failed: peer rank 0 exited, was killed or did not answer
// within 600 s (--dist-timeout-s) [gloo: Connection closed by peer ...]"
[[noreturn]] void fail(const Config& c, const std::string& what, const std::exception& e) {
  const std::string peer = c.world_size == 2 ? "peer rank " + std::to_string(1 - c.rank) : "a peer rank";
  throw unavailable("rank " + std::to_string(c.rank) + " of " + std::to_string(c.world_size) + ": " + what +
                    " failed: " + peer + " exited, is unreachable, or did not answer within " +
                    seconds_text(c.timeout_s) + " (--dist-timeout-s) [" + detail_of(e) + "]");
}

}  // namespace

struct Group::Impl {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::ProcessGroupGloo> pg;
};

Group::Group(const Config& config, std::unique_ptr<Impl> impl) : config_(config), impl_(std::move(impl)) {}
Group::~Group() = default;

std::shared_ptr<Group> Group::connect(const Config& config) {
  if (config.world_size < 2) throw invalid_argument("dist::Group needs a world of 2 or more ranks");
  auto impl = std::make_unique<Impl>();
  const std::string where = config.master_addr + ":" + std::to_string(config.master_port);
  try {
    c10d::TCPStoreOptions so;
    so.port = static_cast<std::uint16_t>(config.master_port);
    so.isServer = config.rank == 0;
    so.numWorkers = static_cast<std::size_t>(config.world_size);
    so.waitWorkers = true;
    so.timeout = timeout_of(config);
    impl->store = c10::make_intrusive<c10d::TCPStore>(config.master_addr, so);
  } catch (const std::exception& e) {
    fail(config, config.rank == 0 ? "hosting the rendezvous at " + where : "joining the rendezvous at " + where, e);
  }
  try {
    auto options = c10d::ProcessGroupGloo::Options::create(timeout_of(config));
    options->devices.push_back(make_device(config));
    impl->pg = c10::make_intrusive<c10d::ProcessGroupGloo>(impl->store, config.rank, config.world_size, options);
  } catch (const std::exception& e) {
    fail(config, "connecting to the other ranks (rendezvous at " + where + ")", e);
  }
  return std::shared_ptr<Group>(new Group(config, std::move(impl)));
}

void Group::all_reduce_sum(std::vector<torch::Tensor>& tensors, const std::string& what) {
  try {
    // One collective per tensor (Gloo sums the tensors of one call into each other), all in flight
    // before the first wait; each call's tensor list outlives its work.
    std::vector<std::vector<at::Tensor>> args;
    args.reserve(tensors.size());
    std::vector<c10::intrusive_ptr<c10d::Work>> works;
    for (auto& t : tensors) {
      args.push_back({t});
      works.push_back(impl_->pg->allreduce(args.back()));
    }
    for (auto& w : works) w->wait();
  } catch (const std::exception& e) {
    fail(config_, "all-reduce of " + what, e);
  }
}

void Group::broadcast(std::vector<torch::Tensor>& tensors, int root, const std::string& what) {
  try {
    std::vector<std::vector<at::Tensor>> args;
    args.reserve(tensors.size());
    std::vector<c10::intrusive_ptr<c10d::Work>> works;
    c10d::BroadcastOptions opts;
    opts.rootRank = root;
    for (auto& t : tensors) {
      args.push_back({t});
      works.push_back(impl_->pg->broadcast(args.back(), opts));
    }
    for (auto& w : works) w->wait();
  } catch (const std::exception& e) {
    fail(config_, "broadcast of " + what, e);
  }
}

void Group::barrier(const std::string& what) {
  try {
    impl_->pg->barrier()->wait();
  } catch (const std::exception& e) {
    fail(config_, what, e);
  }
}

}  // namespace bulwark::dist
