// bench/scale — data-parallel training (train::fit over dist::Group) on this machine, and a
// projection past it (docs/scaling.md has the model and its assumptions).
//
//   1. One epoch of N images (global batch B, zoo `cnn`), plain cross-entropy and PGD-AT: one
//      process with every core, one process with one core, and two rank processes of one core
//      each on loopback; wall clock and CPU time (the machine may be shared).
//   2. All-reduce on loopback between two rank processes, sizes 4 KiB..16 MiB and the model's
//      gradient: fits the ring model T(n) = 2(p-1)·alpha + 2(p-1)/p · n/beta at p = 2 to the
//      fastest of each size's repetitions.
//   3. One-core compute per step at the per-rank batch B/p, measured (CPU time) for p = 1..64.
//   4. The projection T_step(p) = compute(B/p) + T_allreduce(p, gradient bytes) (all-reduce after
//      backward, no overlap, as fit does), with the measured alpha and beta and with an assumed
//      10 GbE pod network.
//
// usage: scale [images=4096] [batch=128] [pgd_steps=7]
// Ranks are this binary run again (/proc/self/exe --worker ...), one process each, as in a job.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <spawn.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <torch/torch.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "core/system.h"
#include "data/dataset.h"
#include "defense/objectives.h"
#include "dist/group.h"
#include "model/zoo.h"
#include "train/train.h"

extern char** environ;

namespace {

using bulwark::data::Dataset;
using Clock = std::chrono::steady_clock;

constexpr const char* kArch = "cnn";
constexpr double kEpochImages = 60000;  // a Fashion-MNIST epoch, for the projected epoch times

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// CPU seconds of every thread of this process: unlike the wall clock, not inflated by other
// tenants of a shared machine holding the cores.
double process_cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
}

std::unique_ptr<bulwark::train::Objective> make_objective(const std::string& name, int64_t pgd_steps) {
  if (name == "pgd-at") {
    bulwark::defense::AdversarialSettings s{bulwark::attack::Threat{bulwark::attack::Norm::kLinf, 0.1, 0.0, 1.0}, 0, 0};
    return std::make_unique<bulwark::defense::PgdAtObjective>(s, pgd_steps);
  }
  return std::make_unique<bulwark::train::CrossEntropyObjective>();
}

bulwark::model::Model fresh_model(const Dataset& d) {
  auto spec = bulwark::model::default_spec();
  spec.class_names = d.class_names;
  return bulwark::model::create_model(kArch, spec, 0);
}

struct FitTiming {
  double seconds = 0;
  double communication_seconds = 0;
  double cpu_seconds = 0;  // all ranks together
  int64_t steps = 0;
};

FitTiming timed_fit(const Dataset& d, int64_t batch, const std::string& objective, int64_t pgd_steps,
                    std::shared_ptr<bulwark::dist::Group> group) {
  auto m = fresh_model(d);
  auto obj = make_objective(objective, pgd_steps);
  const auto opts =
      bulwark::train::TrainOptions().epochs(1).batch_size(batch).progress(false).process_group(std::move(group));
  const double cpu0 = process_cpu_seconds();
  const auto r = bulwark::train::fit(m, d, {}, opts, *obj);
  return {r.seconds, r.communication_seconds, process_cpu_seconds() - cpu0, (d.size() + batch - 1) / batch};
}

// ---- worker processes ------------------------------------------------------------------------

std::shared_ptr<bulwark::dist::Group> join(int rank, int world, int port) {
  if (world < 2) return nullptr;
  bulwark::dist::Config c;
  c.world_size = world;
  c.rank = rank;
  c.master_port = port;
  c.timeout_s = 300;
  return bulwark::dist::Group::connect(c);
}

// --worker fit RANK WORLD PORT THREADS OBJECTIVE IMAGES BATCH PGD_STEPS: one epoch; each rank
// prints "seconds comm_seconds cpu_seconds steps" in one write.
int worker_fit(char** a) {
  const int rank = std::atoi(a[0]), world = std::atoi(a[1]), port = std::atoi(a[2]);
  torch::set_num_threads(std::atoi(a[3]));
  const std::string objective = a[4];
  const int64_t images = std::atoll(a[5]), batch = std::atoll(a[6]), pgd_steps = std::atoll(a[7]);
  const auto d = bulwark::data::load_dataset("fashion-mnist", bulwark::data::Split::kTrain).head(images);
  auto group = join(rank, world, port);
  timed_fit(d.head(std::min<int64_t>(images, 2 * batch)), batch, objective, pgd_steps, group);  // warm-up
  const auto t = timed_fit(d, batch, objective, pgd_steps, group);
  std::printf("%.6f %.6f %.6f %lld\n", t.seconds, t.communication_seconds, t.cpu_seconds,
              static_cast<long long>(t.steps));
  std::fflush(stdout);
  return 0;
}

// --worker allreduce RANK PORT BYTES...: rank 0 prints the fastest and the median seconds of each
// size (the fastest: the exchange itself, without a rank descheduled by other tenants).
int worker_allreduce(int argc, char** a) {
  const int rank = std::atoi(a[0]), port = std::atoi(a[1]);
  torch::set_num_threads(1);
  auto group = join(rank, 2, port);
  for (int i = 2; i < argc; ++i) {
    const int64_t bytes = std::atoll(a[i]);
    std::vector<torch::Tensor> t{torch::ones({bytes / 4}, torch::kFloat32)};
    const int reps = bytes <= (1 << 20) ? 50 : 15;
    std::vector<double> times;
    for (int r = 0; r < reps + 3; ++r) {
      group->barrier("bench barrier");
      const auto t0 = Clock::now();
      group->all_reduce_sum(t, "bench tensor");
      if (r >= 3) times.push_back(seconds_since(t0));
    }
    if (rank == 0) {
      std::printf("%lld %.9f %.9f\n", static_cast<long long>(bytes), *std::min_element(times.begin(), times.end()),
                  median(times));
    }
  }
  return 0;
}

// ---- the parent ------------------------------------------------------------------------------

// Runs `world` copies of this binary with `args` (RANK first, then WORLD PORT for fit); returns
// their stdout (rank 0's alone for the all-reduce workers).
std::string run_ranks(const std::string& mode, int world, const std::vector<std::string>& tail) {
  const int port = free_port();
  std::vector<pid_t> pids;
  int out[2];
  if (::pipe(out) != 0) throw std::runtime_error("pipe");
  for (int rank = 0; rank < world; ++rank) {
    std::vector<std::string> args = {"/proc/self/exe", "--worker", mode, std::to_string(rank)};
    if (mode == "fit") args.push_back(std::to_string(world));
    args.push_back(std::to_string(port));
    args.insert(args.end(), tail.begin(), tail.end());
    std::vector<char*> argv;
    for (auto& s : args) argv.push_back(s.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    if (rank == 0 || mode == "fit") posix_spawn_file_actions_adddup2(&fa, out[1], 1);
    posix_spawn_file_actions_addclose(&fa, out[0]);
    pid_t pid = 0;
    if (posix_spawn(&pid, "/proc/self/exe", &fa, nullptr, argv.data(), environ) != 0) {
      throw std::runtime_error("posix_spawn failed");
    }
    posix_spawn_file_actions_destroy(&fa);
    pids.push_back(pid);
  }
  ::close(out[1]);
  std::string text;
  char buf[4096];
  ssize_t n;
  while ((n = ::read(out[0], buf, sizeof buf)) > 0) text.append(buf, static_cast<size_t>(n));
  ::close(out[0]);
  for (pid_t p : pids) {
    int status = 0;
    ::waitpid(p, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) throw std::runtime_error(mode + " worker failed");
  }
  return text;
}

FitTiming measured_epoch(int world, int threads, const std::string& objective, int64_t images, int64_t batch,
                         int64_t pgd_steps) {
  const auto text = run_ranks(
      "fit", world,
      {std::to_string(threads), objective, std::to_string(images), std::to_string(batch), std::to_string(pgd_steps)});
  // Wall clock and exchange time of the slowest rank; CPU time of all ranks.
  FitTiming t;
  const char* p = text.c_str();
  double secs = 0, comm = 0, cpu = 0;
  long long steps = 0;
  int used = 0;
  while (std::sscanf(p, "%lf %lf %lf %lld%n", &secs, &comm, &cpu, &steps, &used) == 4) {
    p += used;
    t.seconds = std::max(t.seconds, secs);
    t.communication_seconds = std::max(t.communication_seconds, comm);
    t.cpu_seconds += cpu;
    t.steps = steps;
  }
  return t;
}

struct RingModel {
  double alpha_s = 0;   // per message latency
  double beta_bps = 0;  // bytes per second per link
  double seconds(int p, double bytes) const {
    if (p < 2) return 0;
    return 2.0 * (p - 1) * alpha_s + 2.0 * (p - 1) / p * bytes / beta_bps;
  }
};

// Least squares t = a + b·n over the measured sizes, each weighted by 1/t² (relative error, so the
// small sizes that show the latency count as much as the large ones that show the bandwidth); at
// p = 2 the ring model is 2·alpha + n/beta.
RingModel fit_ring(const std::vector<std::pair<double, double>>& pts) {
  double sw = 0, sx = 0, sy = 0, sxx = 0, sxy = 0;
  for (const auto& [x, y] : pts) {
    const double w = 1.0 / (y * y);
    sw += w;
    sx += w * x;
    sy += w * y;
    sxx += w * x * x;
    sxy += w * x * y;
  }
  const double b = (sw * sxy - sx * sy) / (sw * sxx - sx * sx);
  const double a = (sy - b * sx) / sw;
  return {std::max(a, 0.0) / 2.0, 1.0 / b};
}

// One-core compute per step at `per_rank_batch`, in CPU seconds of this (single-threaded) process
// (on a shared machine the wall clock also counts the time other tenants hold the core), the
// median of three runs.
double compute_per_step(const Dataset& d, int64_t per_rank_batch, const std::string& objective, int64_t pgd_steps) {
  const int64_t steps = std::max<int64_t>(8, std::min<int64_t>(64, 1024 / per_rank_batch));
  const auto sample = d.head(steps * per_rank_batch);
  timed_fit(sample.head(2 * per_rank_batch), per_rank_batch, objective, pgd_steps, nullptr);  // warm-up
  std::vector<double> per_step;
  for (int r = 0; r < 3; ++r) {
    per_step.push_back(timed_fit(sample, per_rank_batch, objective, pgd_steps, nullptr).cpu_seconds /
                       static_cast<double>(steps));
  }
  return median(per_step);
}

void projection_table(const char* title, const Dataset& d, int64_t batch, const std::string& objective,
                      int64_t pgd_steps, double grad_bytes, const RingModel& loopback, const RingModel& network) {
  std::printf("\n%s, global batch %lld, %.0f-image epoch (compute: one core per rank, measured in CPU time):\n", title,
              static_cast<long long>(batch), kEpochImages);
  std::printf(
      "| ranks | per-rank batch | compute ms/step | all-reduce ms (loopback) | all-reduce ms (10 GbE) | "
      "epoch s (10 GbE) | speedup (10 GbE) | efficiency |\n");
  std::printf("|---|---|---|---|---|---|---|---|\n");
  const double steps = kEpochImages / static_cast<double>(batch);
  double t1 = 0;
  for (int p : {1, 2, 4, 8, 16, 32, 64}) {
    const int64_t per_rank = std::max<int64_t>(1, batch / p);
    const double c = compute_per_step(d, per_rank, objective, pgd_steps);
    const double step = c + network.seconds(p, grad_bytes);
    if (p == 1) t1 = step;
    std::printf("| %d | %lld | %.2f | %.3f | %.3f | %.1f | %.2fx | %.0f%% |\n", p, static_cast<long long>(per_rank),
                1e3 * c, 1e3 * loopback.seconds(p, grad_bytes), 1e3 * network.seconds(p, grad_bytes), steps * step,
                t1 / step, 100 * t1 / step / p);
    std::fflush(stdout);
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc > 2 && std::string(argv[1]) == "--worker") {
    ::prctl(PR_SET_PDEATHSIG, SIGTERM);  // a rank never outlives the bench
    const std::string mode = argv[2];
    if (mode == "fit") return worker_fit(argv + 3);
    return worker_allreduce(argc - 3, argv + 3);
  }
  const int64_t images = argc > 1 ? std::atoll(argv[1]) : 4096;
  const int64_t batch = argc > 2 ? std::atoll(argv[2]) : 128;
  const int64_t pgd_steps = argc > 3 ? std::atoll(argv[3]) : 7;
  const int cores = bulwark::hardware_threads();
  const auto d = bulwark::data::load_dataset("fashion-mnist", bulwark::data::Split::kTrain);
  const double grad_bytes = 4.0 * static_cast<double>(fresh_model(d).parameter_count());
  double load[3] = {0, 0, 0};
  ::getloadavg(load, 3);
  std::printf("scale: zoo %s (%.2f MB of gradient), %lld images, global batch %lld, %d cores, load average %.1f, %s\n",
              kArch, grad_bytes / 1e6, static_cast<long long>(images), static_cast<long long>(batch), cores, load[0],
              bulwark::loaded_blas().c_str());

  // 1. Measured: one epoch, 1 process with every core vs 2 ranks of cores/2 each.
  std::printf("\nOne epoch on this machine (%d cores in all):\n", cores);
  std::printf(
      "| objective | ranks x threads | epoch s (wall) | img/s | all-reduce s (share) | speedup (wall) | CPU s, all "
      "ranks | "
      "img per CPU s |\n|---|---|---|---|---|---|---|---|\n");
  for (const std::string objective : {"standard", "pgd-at"}) {
    const auto one = measured_epoch(1, cores, objective, images, batch, pgd_steps);
    const auto one_core = measured_epoch(1, std::max(1, cores / 2), objective, images, batch, pgd_steps);
    const auto two = measured_epoch(2, std::max(1, cores / 2), objective, images, batch, pgd_steps);
    const std::string label = objective == "pgd-at" ? "pgd-at (PGD-" + std::to_string(pgd_steps) + ")" : objective;
    const double n = static_cast<double>(images);
    std::printf("| %s | 1 x %d | %.2f | %.0f | - | 1.00x | %.2f | %.0f |\n", label.c_str(), cores, one.seconds,
                n / one.seconds, one.cpu_seconds, n / one.cpu_seconds);
    std::printf("| %s | 1 x %d | %.2f | %.0f | - | %.2fx | %.2f | %.0f |\n", label.c_str(), std::max(1, cores / 2),
                one_core.seconds, n / one_core.seconds, one.seconds / one_core.seconds, one_core.cpu_seconds,
                n / one_core.cpu_seconds);
    std::printf("| %s | 2 x %d | %.2f | %.0f | %.2f (%.0f%%) | %.2fx | %.2f | %.0f |\n", label.c_str(),
                std::max(1, cores / 2), two.seconds, n / two.seconds, two.communication_seconds,
                100 * two.communication_seconds / two.seconds, one.seconds / two.seconds, two.cpu_seconds,
                n / two.cpu_seconds);
    std::fflush(stdout);
  }

  // 2. All-reduce on loopback.
  std::vector<std::string> sizes;
  for (int64_t b = 4096; b <= (16 << 20); b *= 4) sizes.push_back(std::to_string(b));
  sizes.push_back(std::to_string(static_cast<int64_t>(grad_bytes)));
  const auto text = run_ranks("allreduce", 2, sizes);
  std::vector<std::pair<double, double>> pts;
  double grad_allreduce_s = 0;
  std::printf(
      "\nAll-reduce (sum, float32) between 2 ranks on loopback:\n"
      "| bytes | fastest ms | median ms | GB/s (n / fastest) |\n|---|---|---|---|\n");
  const char* p = text.c_str();
  long long bytes = 0;
  double fastest = 0, med = 0;
  int used = 0;
  while (std::sscanf(p, "%lld %lf %lf%n", &bytes, &fastest, &med, &used) == 3) {
    p += used;
    std::printf("| %lld | %.3f | %.3f | %.2f |\n", bytes, 1e3 * fastest, 1e3 * med,
                static_cast<double>(bytes) / fastest / 1e9);
    if (bytes == static_cast<long long>(grad_bytes)) {
      grad_allreduce_s = fastest;
    } else {
      pts.emplace_back(static_cast<double>(bytes), fastest);
    }
  }
  const RingModel loopback = fit_ring(pts);
  // Assumed pod network (not measured here): 10 GbE, 50 us per message.
  const RingModel network{50e-6, 10e9 / 8};
  std::printf(
      "\nRing model T = 2(p-1)·alpha + 2(p-1)/p · n/beta: loopback fit alpha = %.1f us, beta = %.2f GB/s; "
      "the model's gradient (%.2f MB) measured %.3f ms (fastest), modelled %.3f ms. Assumed network: alpha = %.0f us, "
      "beta = %.2f GB/s.\n",
      1e6 * loopback.alpha_s, loopback.beta_bps / 1e9, grad_bytes / 1e6, 1e3 * grad_allreduce_s,
      1e3 * loopback.seconds(2, grad_bytes), 1e6 * network.alpha_s, network.beta_bps / 1e9);
  std::fflush(stdout);

  // 3 and 4. Projection.
  torch::set_num_threads(1);
  projection_table("Plain cross-entropy", d, batch, "standard", pgd_steps, grad_bytes, loopback, network);
  projection_table(("PGD-AT (PGD-" + std::to_string(pgd_steps) + ")").c_str(), d, batch, "pgd-at", pgd_steps,
                   grad_bytes, loopback, network);
  ::getloadavg(load, 3);
  std::printf("\nload average at the end: %.1f (on %d cores)\n", load[0], cores);
  return 0;
}
