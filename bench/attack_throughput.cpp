// bench/attack_throughput — PGD-20 (L∞, eps 0.1) over 1000 Fashion-MNIST test images on the
// baseline `cnn`, against a bare LibTorch loop (torch::nn, same weights) doing the same number of
// forward+backward image passes in full batches; alternated rounds, median ratio (goal >= 0.9).
// Then the `auto` cascade (APGD-CE -> APGD-T -> Square) at the same eps, in seconds. Then the
// precision levers of issue 14, side by side in alternated rounds: PGD-20 (early stop, as
// `bulwark attack` runs it) and APGD-CE (100 iterations) with fp32 and bf16 gradient passes
// (attack/precision.h) at batch `batch` and 128, each with its time relative to fp32 at `batch`
// and its robust accuracy (every verdict fp32) on the same points. This program sets malloc up as
// the bulwark CLI does (core/system.h); the precision levers' reference row — Bulwark before issue
// 14: untouched graph, NCHW gradient passes, glibc's and OpenBLAS's defaults — runs in a child
// process (bench/child.h).
//
// usage: attack_throughput [model.pt or - (train a cnn for 1 epoch)] [n=1000] [rounds=5] [batch=256]
//                          [precision_rounds=3 (0: skip)]   (rounds 0: only the precision levers)
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "attack/attack.h"
#include "bare_cnn.h"
#include "child.h"
#include "core/system.h"
#include "data/dataset.h"
#include "model/zoo.h"
#include "train/trainer.h"

namespace {

using Clock = std::chrono::steady_clock;
double since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

bulwark::model::Model baseline(int argc, char** argv) {
  if (argc > 1 && std::string(argv[1]) != "-") return bulwark::model::Model::load(argv[1]);
  std::fprintf(stderr, "no model given: training a cnn for 1 epoch\n");
  auto m = bulwark::model::create_model("cnn", bulwark::model::default_spec(), 0);
  bulwark::train::CrossEntropyObjective ce;
  bulwark::train::fit(m, bulwark::data::load_dataset("fashion-mnist", bulwark::data::Split::kTrain), {},
                      bulwark::train::TrainOptions().epochs(1).progress(false), ce);
  return m;
}

// Forward+backward w.r.t. the input over `passes` images, then forward-only over `forwards`
// images, in batches of `batch`.
double bare_seconds(bulwark::bench::BareCnn& net, const torch::Tensor& x, const torch::Tensor& y, int64_t passes,
                    int64_t forwards, int64_t batch) {
  const auto t0 = Clock::now();
  {
    torch::NoGradGuard no_grad;
    for (int64_t done = 0, s = 0; done < forwards; done += batch, s = (s + batch) % x.size(0)) {
      const int64_t b = std::min({batch, forwards - done, x.size(0) - s});
      (void)net.forward(x.narrow(0, s, b));
    }
  }
  for (int64_t done = 0, s = 0; done < passes; done += batch, s = (s + batch) % x.size(0)) {
    const int64_t b = std::min({batch, passes - done, x.size(0) - s});
    auto xb = x.narrow(0, s, b).detach().requires_grad_(true);
    const auto loss = torch::nn::functional::cross_entropy(net.forward(xb), y.narrow(0, s, b));
    const auto g = torch::autograd::grad({loss}, {xb})[0];
    (void)g;
  }
  return since(t0);
}

// One way of running the gradient passes, and what it measured.
struct PrecisionVariant {
  PrecisionVariant(bulwark::attack::Precision p, int64_t b, bool u = false) : precision(p), batch(b), untouched(u) {}
  bulwark::attack::Precision precision;
  int64_t batch;
  bool untouched = false;  // the module's own forward graph, NCHW gradient passes: Bulwark before issue 14
  std::vector<double> pgd_s, apgd_s;
  double pgd_acc = 0, apgd_acc = 0;
  std::string name() const {
    return bulwark::attack::to_string(precision) + " batch " + std::to_string(batch) + (untouched ? " untouched" : "");
  }
};

// One attack ("pgd": PGD-20 with early stop, or "apgd-ce") over x with one variant; its seconds,
// and its robust accuracy in `acc`.
double timed_attack(const std::string& name, const bulwark::model::Model& m, const PrecisionVariant& v,
                    const torch::Tensor& x, const torch::Tensor& y, double& acc) {
  namespace attack = bulwark::attack;
  bulwark::model::Model run_on = m;  // shares the module
  run_on.use_forward_graph(!v.untouched);
  run_on.use_channels_last_gradients(!v.untouched);
  attack::SuiteOptions o;
  o.attacks = {name};
  o.eps = {0.1};
  o.settings.batch_size = v.batch;
  o.progress = false;
  o.masking_checks = false;
  const auto t0 = Clock::now();
  const auto rep = attack::evaluate_robustness(attack::logits_of(run_on, v.precision), x, y, o);
  acc = rep.rows[0].robust_accuracy;
  return since(t0);
}

// The reference side (BENCH_CHILD=untouched, bench/child.h): fp32 on the module's untouched
// forward graph with NCHW (exact) gradient passes at `batch`, with glibc's default malloc and
// OpenBLAS's default threads — Bulwark before issue 14. One round.
int untouched_child(const bulwark::model::Model& m, const torch::Tensor& x, const torch::Tensor& y, int64_t batch) {
  PrecisionVariant v{bulwark::attack::Precision::kFp32, batch, true};
  double pgd_acc = 0, apgd_acc = 0;
  const double pgd_s = timed_attack("pgd", m, v, x, y, pgd_acc);
  const double apgd_s = timed_attack("apgd-ce", m, v, x, y, apgd_acc);
  std::printf("{\"pgd_s\":%.4f,\"pgd_acc\":%.6f,\"apgd_s\":%.4f,\"apgd_acc\":%.6f}\n", pgd_s, pgd_acc, apgd_s,
              apgd_acc);
  return 0;
}

// PGD-20 and APGD-CE with each variant, `rounds` rounds, the order rotated each round so a slow
// spell of the shared machine does not land on one variant. The reference (first row, ratio 1) is
// fp32 on the module's untouched forward graph with glibc's default malloc, in a child process:
// the attack step before issue 14. The other rows run here, with the malloc setting of the CLI.
void precision_levers(const std::string& model_arg, const bulwark::model::Model& m, const torch::Tensor& x,
                      const torch::Tensor& y, int64_t batch, int rounds) {
  namespace attack = bulwark::attack;
  using attack::Precision;
  std::vector<PrecisionVariant> vs = {{Precision::kFp32, batch, true}, {Precision::kFp32, batch},
                                      {Precision::kFp32, 128},         {Precision::kBf16, batch},
                                      {Precision::kBf16, 128}};
  if (batch == 128) vs = {{Precision::kFp32, 128, true}, {Precision::kFp32, 128}, {Precision::kBf16, 128}};
  for (int r = 0; r < rounds; ++r) {
    for (size_t k = 0; k < vs.size(); ++k) {
      auto& v = vs[(k + static_cast<size_t>(r)) % vs.size()];
      if (v.untouched) {
        const auto j = bulwark::bench::run_child(
            "untouched", {model_arg, std::to_string(x.size(0)), "0", std::to_string(batch), "1"});
        if (j.is_null()) std::exit(1);
        v.pgd_s.push_back(j["pgd_s"].get<double>());
        v.pgd_acc = j["pgd_acc"].get<double>();
        v.apgd_s.push_back(j["apgd_s"].get<double>());
        v.apgd_acc = j["apgd_acc"].get<double>();
      } else {
        v.pgd_s.push_back(timed_attack("pgd", m, v, x, y, v.pgd_acc));
        v.apgd_s.push_back(timed_attack("apgd-ce", m, v, x, y, v.apgd_acc));
      }
      std::fprintf(stderr, "precision round %d: %-26s pgd-20 %.2fs, apgd-ce %.2fs\n", r + 1, v.name().c_str(),
                   v.pgd_s.back(), v.apgd_s.back());
    }
  }
  const auto& ref = vs[0];
  std::printf("\nprecision levers, side by side (%d alternated rounds, median; robust accuracy judged in fp32):\n",
              rounds);
  std::printf("  %-26s %9s %7s %8s %7s   %9s %7s %8s %7s\n", "variant", "pgd-20 s", "ratio", "robust", "d(pt)",
              "apgd-ce s", "ratio", "robust", "d(pt)");
  std::string json;
  for (const auto& v : vs) {
    const double p = median(v.pgd_s), a = median(v.apgd_s);
    std::printf("  %-26s %9.2f %7.3f %7.1f%% %+7.1f   %9.2f %7.3f %7.1f%% %+7.1f\n", v.name().c_str(), p,
                p / median(ref.pgd_s), 100 * v.pgd_acc, 100 * (v.pgd_acc - ref.pgd_acc), a, a / median(ref.apgd_s),
                100 * v.apgd_acc, 100 * (v.apgd_acc - ref.apgd_acc));
    char row[320];
    std::snprintf(row, sizeof row,
                  "%s{\"precision\":\"%s\",\"batch\":%lld,\"untouched_graph\":%s,\"pgd20_seconds\":%.3f,\"pgd20_robust_accuracy\":%.4f,"
                  "\"apgd_ce_seconds\":%.3f,\"apgd_ce_robust_accuracy\":%.4f}",
                  json.empty() ? "" : ",", attack::to_string(v.precision).c_str(), static_cast<long long>(v.batch),
                  v.untouched ? "true" : "false", p,
                  v.pgd_acc, a, v.apgd_acc);
    json += row;
  }
  std::printf("{\"bench\":\"attack_throughput_precision\",\"n\":%lld,\"rounds\":%d,\"variants\":[%s]}\n",
              static_cast<long long>(x.size(0)), rounds, json.c_str());
}

}  // namespace

int main(int argc, char** argv) {
  namespace attack = bulwark::attack;
  const int64_t n = argc > 2 ? std::atoll(argv[2]) : 1000;
  const int rounds = argc > 3 ? std::atoi(argv[3]) : 5;
  const int64_t batch = argc > 4 ? std::atoll(argv[4]) : 256;
  const int precision_rounds = argc > 5 ? std::atoi(argv[5]) : 3;
  const bool untouched_side = bulwark::bench::child_side() == "untouched";
  if (!untouched_side) bulwark::tune_process_for_tensor_work();  // as the bulwark CLI, before any tensor
  torch::set_num_threads(bulwark::hardware_threads());
  auto m = baseline(argc, argv);
  m.set_parameters_require_grad(false);
  const auto test = bulwark::data::load_dataset("fashion-mnist", bulwark::data::Split::kTest).head(n);
  const auto x = test.inputs(), y = test.targets();
  if (untouched_side) return untouched_child(m, x, y, batch);
  const std::string model_arg = argc > 1 ? argv[1] : "-";
  auto net = std::make_shared<bulwark::bench::BareCnn>();
  net->copy_from(m);
  for (auto& p : net->parameters()) p.requires_grad_(false);

  if (rounds == 0) {
    precision_levers(model_arg, m, x, y, batch, std::max(precision_rounds, 1));
    return 0;
  }
  attack::SuiteOptions pgd;
  pgd.attacks = {"pgd"};
  pgd.eps = {0.1};
  pgd.settings.batch_size = batch;
  pgd.progress = false;
  pgd.masking_checks = false;
  std::vector<double> ours, bare, ratios;
  attack::RobustnessReport last;
  for (int r = 0; r < rounds; ++r) {
    const auto t0 = Clock::now();
    last = attack::evaluate_robustness(attack::logits_of(m), x, y, pgd);
    const double o = since(t0);
    // The evaluation's own work: the attack's passes plus the clean predictions of all n points.
    const int64_t passes = last.rows[0].cost.gradient_passes;
    const int64_t forwards = last.rows[0].cost.forward_passes + n;
    const double b = bare_seconds(*net, x, y, passes, forwards, batch);
    ours.push_back(o);
    bare.push_back(b);
    ratios.push_back(b / o);
    std::fprintf(stderr, "round %d: pgd-20 %.2fs, bare %.2fs for %lld fwd+bwd and %lld fwd passes, ratio %.3f\n",
                 r + 1, o, b, static_cast<long long>(passes), static_cast<long long>(forwards), b / o);
  }
  const auto& row = last.rows[0];

  // The step loop alone: PGD-20 on every point for every step (no early stop), against the bare
  // loop doing the same 20 forward+backward passes per point in the same batches.
  std::vector<double> loop_ratios;
  double loop_ours = 0, loop_bare = 0;
  for (int r = 0; r < rounds; ++r) {
    attack::Pgd full(attack::PgdOptions(0.1).early_stop(false).batch_size(batch).seed(static_cast<uint64_t>(r)));
    const auto t0 = Clock::now();
    full.perturb(attack::logits_of(m), x, y);
    loop_ours = since(t0);
    loop_bare = bare_seconds(*net, x, y, full.cost().gradient_passes, 0, batch);
    loop_ratios.push_back(loop_bare / loop_ours);
    std::fprintf(stderr, "loop round %d: pgd-20 %.2fs, bare %.2fs, ratio %.3f\n", r + 1, loop_ours, loop_bare,
                 loop_bare / loop_ours);
  }

  attack::SuiteOptions aa = pgd;
  aa.attacks = attack::auto_attacks();
  aa.cascade = true;
  const auto t1 = Clock::now();
  const auto autorep = attack::evaluate_robustness(attack::logits_of(m), x, y, aa);
  const double auto_s = since(t1);

  std::printf("attack_throughput: cnn, %lld test images, linf eps 0.1, batch %lld, %d threads, %s\n",
              static_cast<long long>(n), static_cast<long long>(batch), torch::get_num_threads(),
              bulwark::loaded_blas().c_str());
  std::printf("  clean accuracy            %6.1f%%\n", 100 * last.clean_accuracy);
  std::printf("  pgd-20 robust accuracy    %6.1f%%   (%lld fwd+bwd and %lld fwd image passes, early stop)\n",
              100 * row.robust_accuracy, static_cast<long long>(row.cost.gradient_passes),
              static_cast<long long>(row.cost.forward_passes + n));
  std::printf("  pgd-20 seconds            %8.2f   (median of %d)\n", median(ours), rounds);
  std::printf("  bare fwd+bwd seconds      %8.2f   (same passes, full batches)\n", median(bare));
  std::printf("  ratio bare/pgd            %8.3f   (median of paired rounds; goal >= 0.9)\n", median(ratios));
  std::printf("  step loop ratio bare/pgd  %8.3f   (PGD-20 on all points, no early stop; median of paired rounds)\n",
              median(loop_ratios));
  std::printf("  auto robust accuracy      %6.1f%%\n", 100 * autorep.worst[0].robust_accuracy);
  std::printf("  auto seconds              %8.2f\n", auto_s);
  std::printf("{\"bench\":\"attack_throughput\",\"pgd20_seconds\":%.3f,\"bare_seconds\":%.3f,\"ratio\":%.4f,"
              "\"step_loop_ratio\":%.4f,\"pgd20_robust_accuracy\":%.4f,\"auto_seconds\":%.3f,\"auto_robust_accuracy\":%.4f}\n",
              median(ours), median(bare), median(ratios), median(loop_ratios), row.robust_accuracy, auto_s,
              autorep.worst[0].robust_accuracy);
  std::fflush(stdout);
  if (precision_rounds > 0) precision_levers(model_arg, m, x, y, batch, precision_rounds);
  return 0;
}
