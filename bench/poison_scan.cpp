// bench/poison_scan — the backdoor scan (src/poison) against BadNets on Fashion-MNIST: for each
// variant (one-to-one source -> target, all-to-one) and rate, poison the training set, train
// cnn-small on it, measure the attack success rate (ASR), scan (spectral centred and uncentred,
// activation clustering), score each method's precision / recall against the ground truth, retrain
// without the better method's suspects and measure ASR and clean accuracy again. A clean run first:
// what the scan flags on a set with no poison. Figures: docs/poisoning.md and docs/BENCHMARKS.md.
//
// usage: poison_scan [--limit N=60000] [--epochs E=3] [--target T=0] [--source S=2]
//                    [--rates 0.01,0.05,0.1] [--modes one-to-one,all-to-one] [--seed 0] [--orient-all]
#include <torch/torch.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "core/system.h"
#include "data/dataset.h"
#include "model/zoo.h"
#include "poison/poison.h"
#include "train/train.h"

namespace {

using namespace bulwark;
using Clock = std::chrono::steady_clock;

double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

struct Args {
  int64_t limit = 60000, epochs = 3, target = 0, source = 2;
  std::vector<double> rates = {0.01, 0.05, 0.1};
  std::vector<std::string> modes = {"one-to-one", "all-to-one"};
  uint64_t seed = 0;
  bool orient_all = false;
  bool whiten = true;
  double shrinkage = 0.05;
};

template <typename T>
std::vector<T> list(const std::string& s) {
  std::vector<T> out;
  std::stringstream in(s);
  std::string item;
  while (std::getline(in, item, ',')) {
    std::stringstream v(item);
    T x;
    v >> x;
    out.push_back(x);
  }
  return out;
}

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i], v = argv[i + 1];
    if (k == "--limit") a.limit = std::stoll(v);
    else if (k == "--epochs") a.epochs = std::stoll(v);
    else if (k == "--target") a.target = std::stoll(v);
    else if (k == "--source") a.source = std::stoll(v);
    else if (k == "--rates") a.rates = list<double>(v);
    else if (k == "--modes") a.modes = list<std::string>(v);
    else if (k == "--seed") a.seed = std::stoull(v);
    else if (k == "--orient-all") a.orient_all = v == "1";
    else if (k == "--whiten") a.whiten = v == "1";
    else if (k == "--shrinkage") a.shrinkage = std::stod(v);
    else {
      std::fprintf(stderr, "unknown flag %s\n", k.c_str());
      std::exit(2);
    }
  }
  return a;
}

train::TrainOptions recipe(const Args& a) {
  return train::TrainOptions().epochs(a.epochs).batch_size(128).lr(1e-3).validation_fraction(0.05).seed(a.seed).progress(false);
}

model::Model train_on(const data::Dataset& d, const Args& a) {
  model::ModelSpec spec;
  spec.input_shape = {1, 28, 28};
  spec.class_names = d.class_names;
  spec.dataset = d.name;
  model::Model m = model::create_model("cnn-small", spec, a.seed);
  const auto o = recipe(a);
  const auto split = data::split_train_validation(d, o.validation_fraction(), a.seed);
  train::CrossEntropyObjective objective;
  train::fit(m, split.train, split.validation, o, objective);
  m.mutable_spec().training = {{"options", o.to_json()}};
  return m;
}

struct Score {
  double precision = 0, recall = 0;
  int64_t flagged = 0;
};

Score score(const std::vector<int64_t>& rows, const torch::Tensor& is_poison) {
  Score s;
  s.flagged = static_cast<int64_t>(rows.size());
  const int64_t poison = is_poison.sum().item<int64_t>();
  int64_t hit = 0;
  const auto p = is_poison.contiguous();
  for (int64_t r : rows) hit += p.data_ptr<bool>()[r] ? 1 : 0;
  s.precision = rows.empty() ? 0.0 : static_cast<double>(hit) / static_cast<double>(rows.size());
  s.recall = poison ? static_cast<double>(hit) / static_cast<double>(poison) : 0.0;
  return s;
}

void print_classes(const poison::ScanResult& r) {
  for (const auto& c : r.classes) {
    auto show = [](const std::optional<poison::Split>& s) {
      if (!s) return std::string("-");
      char b[160];
      std::snprintf(b, sizeof b, "%.2f%s %lld/%lld nb %.2f/%.2f%s", s->statistic, s->separated ? "*" : "",
                    static_cast<long long>(s->suspect_size), static_cast<long long>(s->other_size),
                    s->suspect_other_labels, s->other_other_labels, s->flagged ? " FLAG" : "");
      return std::string(b);
    };
    std::printf("    class %lld %-12s spectral %-40s clustering %s\n", static_cast<long long>(c.label), c.name.c_str(),
                show(c.spectral).c_str(), show(c.clustering).c_str());
  }
}

}  // namespace

int main(int argc, char** argv) {
  const Args a = parse(argc, argv);
  const data::Dataset full = data::load_dataset("fashion-mnist", data::Split::kTrain);
  const data::Dataset clean = full.head(std::min(a.limit, full.size()));
  const data::Dataset test = data::load_dataset("fashion-mnist", data::Split::kTest);
  std::printf("poison_scan: %lld clean training rows, cnn-small, %lld epochs, target %lld, source %lld, seed %llu, %d threads\n",
              static_cast<long long>(clean.size()), static_cast<long long>(a.epochs), static_cast<long long>(a.target),
              static_cast<long long>(a.source), static_cast<unsigned long long>(a.seed), torch::get_num_threads());
  const auto base = poison::ScanOptions().progress(false).seed(a.seed).orient_every_class(a.orient_all).whiten(a.whiten).shrinkage(a.shrinkage);
  {
    auto t = Clock::now();
    const model::Model m = train_on(clean, a);
    const double train_s = since(t);
    t = Clock::now();
    const auto r = poison::scan(m, clean, base);
    std::printf("clean: accuracy %.4f, train %.1f s, scan %.1f s, flagged classes %lld, suspected %zu (spectral %zu, clustering %zu)\n",
                train::evaluate(m, test).accuracy(), train_s, since(t), static_cast<long long>(r.flagged_classes),
                r.suspected_rows.size(), r.rows_of("spectral").size(), r.rows_of("clustering").size());
    print_classes(r);
  }
  for (const auto& mode : a.modes) {
    for (double rate : a.rates) {
      auto bo = poison::BadNetsOptions(a.target, rate).seed(a.seed + 17);
      if (mode == "one-to-one") bo.mode(poison::BadNetsMode::kOneToOne).source(a.source);
      else bo.mode(poison::BadNetsMode::kAllToOne);
      const auto set = poison::badnets(clean, bo);
      auto t = Clock::now();
      const model::Model m = train_on(set.data, a);
      const double train_s = since(t);
      const double asr = poison::attack_success_rate(m, test, bo);
      const double acc = train::evaluate(m, test).accuracy();
      t = Clock::now();
      const auto r = poison::scan(m, set.data, base);
      const double scan_s = since(t);
      const auto ru = poison::scan(m, set.data, poison::ScanOptions(base).method(poison::ScanMethod::kSpectral).spectral_centred(false));
      const Score sp = score(r.rows_of("spectral"), set.is_poison), ac = score(r.rows_of("clustering"), set.is_poison),
                  both = score(r.suspected_rows, set.is_poison), un = score(ru.rows_of("spectral"), set.is_poison);
      const bool sp_better = sp.recall + sp.precision >= ac.recall + ac.precision;
      const auto& removed_rows = sp_better ? r.rows_of("spectral") : r.rows_of("clustering");
      t = Clock::now();
      const auto re = poison::retrain_without(m, set.data, removed_rows, a.seed, false);
      const double retrain_s = since(t);
      std::printf("%-10s %4.0f%% poison %5lld | ASR %.4f acc %.4f | spectral P %.3f R %.3f (%lld) | uncentred P %.3f R %.3f (%lld) | "
                  "clustering P %.3f R %.3f (%lld) | both P %.3f R %.3f | removed %s: ASR %.4f acc %.4f | train %.1f s scan %.1f s retrain %.1f s\n",
                  mode.c_str(), rate * 100, static_cast<long long>(set.poisoned), asr, acc, sp.precision, sp.recall,
                  static_cast<long long>(sp.flagged), un.precision, un.recall, static_cast<long long>(un.flagged),
                  ac.precision, ac.recall, static_cast<long long>(ac.flagged), both.precision, both.recall,
                  sp_better ? "spectral" : "clustering", poison::attack_success_rate(re.model, test, bo),
                  train::evaluate(re.model, test).accuracy(), train_s, scan_s, retrain_s);
      print_classes(r);
      {  // diagnostic: how separable the poison is in the target class's features at best (linearly)
        const torch::Tensor rows = torch::nonzero(set.data.labels.eq(a.target)).squeeze(1);
        const torch::Tensor f = poison::features_of(m, set.data).index_select(0, rows);
        const torch::Tensor is_p = set.is_poison.index_select(0, rows);
        const torch::Tensor w = f.index({is_p}).mean(0) - f.index({is_p.logical_not()}).mean(0);
        const torch::Tensor proj = f.matmul(w / w.norm());
        const torch::Tensor pp = proj.index({is_p}), pc = proj.index({is_p.logical_not()});
        const double sd = std::sqrt(0.5 * (pp.var().item<double>() + pc.var().item<double>()));
        const torch::Tensor centred = f - f.mean(0, true);
        const auto svd = torch::linalg_svd(centred, false);
        const torch::Tensor sv = std::get<1>(svd);
        const torch::Tensor v = std::get<2>(svd)[0];
        {
          const torch::Tensor fp = f.index({is_p}), fc = f.index({is_p.logical_not()});
          const torch::Tensor cov = 0.5 * (torch::cov(fp.t()) + torch::cov(fc.t())) + 1e-6 * torch::eye(f.size(1), torch::kFloat64);
          const torch::Tensor wl = torch::linalg_solve(cov, w.unsqueeze(1)).squeeze(1);
          const torch::Tensor lp = fp.matmul(wl), lc = fc.matmul(wl);
          std::printf("    diag: LDA d' %.2f, rank>1e-6 %lld\n", (lp.mean() - lc.mean()).item<double>() / std::sqrt(0.5 * (lp.var() + lc.var()).item<double>()),
                      static_cast<long long>(torch::linalg_matrix_rank(cov).item<int64_t>()));
        }
        std::printf("    diag: mean-diff d' %.2f, |cos(w, v1)| %.3f, var explained by v1 %.3f, by v2 %.3f\n",
                    (pp.mean().item<double>() - pc.mean().item<double>()) / sd,
                    std::abs(w.dot(v).item<double>()) / w.norm().item<double>(),
                    (sv[0] * sv[0] / sv.pow(2).sum()).item<double>(), (sv[1] * sv[1] / sv.pow(2).sum()).item<double>());
      }
      std::printf("    uncentred:\n");
      print_classes(ru);
      std::fflush(stdout);
    }
  }
  return 0;
}
