// bench/auto_attack — `auto` (APGD-CE -> APGD-T -> Square, the cascade `bulwark attack --attacks auto`
// runs) on the first n Fashion-MNIST test images at L-inf eps 0.1, side by side in one run with:
//   - Bulwark before issue 14: the module's untouched forward graph, batch 256, Square's queries on
//     the exact forward (a LogitsFn without a search forward);
//   - the AutoAttack reference's standard set (APGD-CE, APGD-T, FAB-T, Square; Python, Debian's
//     PyTorch) through bench/autoattack_reference.py, when AUTOATTACK_DIR names a checkout of
//     github.com/fra31/auto-attack (nothing is downloaded; without it that row is skipped).
// Each variant once per round, the order rotated each round; medians; seconds per attack, the
// worst-case robust accuracy, and each time relative to the reference and to "before".
//
// usage: auto_attack model.pt [n=200] [rounds=1] [threads=2] [bf16=0 (1: also --precision bf16)]
//        [frozen=0 (1: also fp32 with Square's queries on the frozen copy instead of the window engine)]
#include <torch/torch.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "attack/attack.h"
#include "child.h"
#include "core/system.h"
#include "data/dataset.h"
#include "model/model.h"

namespace {

namespace attack = bulwark::attack;
using Clock = std::chrono::steady_clock;

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

enum class Kind { kBefore, kFp32, kBf16, kFp32Frozen, kReference };

struct Variant {
  Variant(std::string n, Kind k) : name(std::move(n)), kind(k) {}
  std::string name;
  Kind kind;
  std::vector<double> total;
  std::map<std::string, std::vector<double>> per_attack;
  double robust = -1;
};

nlohmann::json run_reference(const std::string& aa_dir, const std::string& model, int64_t n, int threads) {
  return bulwark::bench::json_line_of("/usr/bin/python3 " BULWARK_BENCH_DIR "/autoattack_reference.py '" + aa_dir +
                                      "' '" + model + "' " + std::to_string(n) + " 0.1 " + std::to_string(threads));
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: auto_attack model.pt [n=200] [rounds=1] [threads=2] [bf16=0] [frozen=0]\n");
    return 2;
  }
  const std::string model_path = argv[1];
  const int64_t n = argc > 2 ? std::atoll(argv[2]) : 200;
  const int rounds = argc > 3 ? std::atoi(argv[3]) : 1;
  const int threads = argc > 4 ? std::atoi(argv[4]) : 2;
  const bool bf16 = argc > 5 && std::atoi(argv[5]) != 0;
  const bool frozen = argc > 6 && std::atoi(argv[6]) != 0;
  const char* aa_env = std::getenv("AUTOATTACK_DIR");
  const std::string aa_dir = aa_env ? aa_env : "";
  const bool before_child = bulwark::bench::child_side() == "before";
  if (!before_child) bulwark::tune_process_for_tensor_work();  // as the bulwark CLI, before any tensor
  torch::set_num_threads(threads);

  auto m = bulwark::model::Model::load(model_path);
  m.set_parameters_require_grad(false);
  bulwark::model::Model untouched = m;  // shares the module; runs its own forward graph
  untouched.use_forward_graph(false);
  const auto test = bulwark::data::load_dataset("fashion-mnist", bulwark::data::Split::kTest).head(n);
  const auto x = test.inputs(), y = test.targets();

  std::vector<Variant> vs = {Variant("bulwark before issue 14", Kind::kBefore),
                             Variant("bulwark fp32 (default)", Kind::kFp32)};
  if (frozen) vs.emplace_back("fp32, Square frozen copy", Kind::kFp32Frozen);
  if (bf16) vs.emplace_back("bulwark --precision bf16", Kind::kBf16);
  if (!aa_dir.empty()) vs.emplace_back("autoattack reference", Kind::kReference);
  const attack::LogitsFn before([&untouched](const torch::Tensor& t) {
    bulwark::model::EvalMode eval(untouched);
    return untouched.logits(t);
  });

  auto run_bulwark = [&](Variant& v) {
    attack::SuiteOptions o;
    o.attacks = attack::auto_attacks();
    o.cascade = true;
    o.eps = {0.1};
    o.progress = false;
    o.masking_checks = false;
    if (v.kind == Kind::kBefore) o.settings.batch_size = 256;  // before: 256 then; the others: the default
    auto f = v.kind == Kind::kBefore
                 ? before
                 : attack::logits_of(m, v.kind == Kind::kBf16 ? attack::Precision::kBf16 : attack::Precision::kFp32);
    if (v.kind == Kind::kFp32Frozen) f.with_window_forward(nullptr);
    const auto t0 = Clock::now();
    const auto rep = attack::evaluate_robustness(f, x, y, o);
    v.total.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
    for (const auto& row : rep.rows) {
      std::string a = row.attack;
      if (!a.empty() && a[0] == '+') a = a.substr(1);
      v.per_attack[a].push_back(row.seconds);
    }
    v.robust = rep.worst[0].robust_accuracy;
  };
  if (before_child) {  // one run of "before", as a JSON line for the parent
    run_bulwark(vs[0]);
    nlohmann::json j = {{"seconds", vs[0].total[0]}, {"robust_accuracy", vs[0].robust}};
    for (const auto& [a, s] : vs[0].per_attack) j["attack_seconds"][a] = s[0];
    std::printf("%s\n", j.dump().c_str());
    return 0;
  }
  auto add_json_run = [](Variant& v, const nlohmann::json& j) {
    v.total.push_back(j["seconds"].get<double>());
    for (const auto& [a, s] : j["attack_seconds"].items()) v.per_attack[a].push_back(s.get<double>());
    v.robust = j["robust_accuracy"].get<double>();
  };
  for (int r = 0; r < rounds; ++r) {
    for (size_t i = 0; i < vs.size(); ++i) {
      const size_t k = (i + static_cast<size_t>(r)) % vs.size();
      auto& v = vs[k];
      if (v.kind == Kind::kReference || v.kind == Kind::kBefore) {
        const auto j =
            v.kind == Kind::kBefore ? bulwark::bench::run_child("before", {model_path, std::to_string(n), "1", std::to_string(threads)})
                   : run_reference(aa_dir, model_path, n, threads);
        if (j.is_null()) return 1;
        add_json_run(v, j);
      } else {
        run_bulwark(v);
      }
      std::fprintf(stderr, "round %d: %-24s %8.1f s, robust %.1f%%\n", r + 1, v.name.c_str(), v.total.back(),
                   100 * v.robust);
    }
  }

  const Variant* ref = aa_dir.empty() ? nullptr : &vs.back();
  const double before_s = median(vs[0].total);
  std::printf("auto_attack: %lld Fashion-MNIST test images, L-inf eps 0.1, %d threads, %d round(s), medians\n",
              static_cast<long long>(n), threads, rounds);
  std::printf("  %-24s %9s %9s %9s %9s %9s %8s %9s %9s\n", "variant", "apgd-ce", "apgd-t", "fab-t", "square", "total",
              "robust", "/before", "/ref");
  nlohmann::json out = {{"bench", "auto_attack"}, {"n", n}, {"threads", threads}, {"rounds", rounds}};
  for (const auto& v : vs) {
    auto cell = [&](const char* a) {
      const auto it = v.per_attack.find(a);
      return it == v.per_attack.end() ? -1.0 : median(it->second);
    };
    const double total = median(v.total);
    std::printf("  %-24s", v.name.c_str());
    for (const char* a : {"apgd-ce", "apgd-t", "fab-t", "square"}) {
      const double s = cell(a);
      if (s < 0) {
        std::printf(" %9s", "-");
      } else {
        std::printf(" %9.1f", s);
      }
    }
    std::printf(" %9.1f %7.1f%% %9.3f", total, 100 * v.robust, total / before_s);
    if (ref) {
      std::printf(" %9.3f\n", total / median(ref->total));
    } else {
      std::printf(" %9s\n", "-");
    }
    nlohmann::json row = {{"variant", v.name}, {"seconds", total}, {"robust_accuracy", v.robust}};
    for (const auto& [a, s] : v.per_attack) row["attack_seconds"][a] = median(s);
    out["variants"].push_back(row);
  }
  if (!ref) std::printf("  (no AUTOATTACK_DIR: the reference row is skipped)\n");
  std::printf("%s\n", out.dump().c_str());
  return 0;
}
