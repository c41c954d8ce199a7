// bench/extraction — the extraction detector (detect/extraction.h) against a Knockoff-style model
// thief, through a real server core (serve::InferenceCore with --extraction flag, requests of 16
// rows as a client would send them, answers read from the response's probabilities):
//   knockoff  an attacker queries MODEL with out-of-distribution images (bench/make_glyphs.py:
//             rendered glyphs, Fashion-MNIST's model has never seen them), keeps the served
//             probabilities and trains a copy (zoo cnn, soft labels, the train module's fit) on the
//             first N answers at checkpoints; agreement = the copy's top-1 equals the served
//             model's on the 10,000 Fashion-MNIST test images. Reported: the query at which the
//             server's detector flagged the client (= where --extraction block refuses it), which
//             statistic did, and the copy's agreement when trained on what was answered before it;
//   benign    the 10,000 test images replayed in order by one client, and sorted by class (a client
//             interested in one kind at a time): flagged or not, the lowest W and highest unsure share;
//   mixed     the attacker diluting its stream with natural images (Fashion-MNIST training images,
//             k natural per glyph) to evade, for k = 1, 2, 3: queries to the flag (detector only).
// Each statistic's own flag point comes from a detector with only that statistic on, fed the same
// rows and answers.
// usage: extraction MODEL GLYPH_DIR [queries=20000] [seed=0] [epochs=8] [checkpoints=1]
// (checkpoints 0: the copy is trained only at the flag)
#include <torch/torch.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "data/dataset.h"
#include "detect/extraction.h"
#include "model/model.h"
#include "model/zoo.h"
#include "serve/core.h"
#include "train/train.h"

namespace {

namespace detect = bulwark::detect;
namespace serve = bulwark::serve;
namespace data = bulwark::data;
namespace train = bulwark::train;
using bulwark::model::Model;
const detect::Shape kImage{1, 28, 28};
constexpr int64_t kRows = 16;  // rows per request

// Soft-label distillation (what Knockoff trains on): y holds each row's index into `soft`.
class SoftLabels : public train::Objective {
 public:
  explicit SoftLabels(torch::Tensor soft) : soft_(std::move(soft)) {}
  std::string name() const override { return "knockoff-soft-labels"; }
  train::StepOutput step(Model& m, const torch::Tensor& x, const torch::Tensor& y, const train::StepContext&) override {
    auto logits = m.logits(x);
    auto target = soft_.index_select(0, y.to(torch::kCPU)).to(logits.device());
    return {-(target * torch::log_softmax(logits, 1)).sum(1).mean(), logits};
  }

 private:
  torch::Tensor soft_;
};

// One client's stream through the core: sends rows [0, n) of x in requests of kRows; returns the
// served probabilities and the row at which the client was first flagged (-1: never).
struct Served {
  torch::Tensor probs;
  int64_t flagged_at = -1;
  std::string statistic;
};
Served serve_stream(serve::InferenceCore& core, const std::string& peer, const torch::Tensor& x) {
  Served s;
  const int64_t n = x.size(0);
  std::vector<torch::Tensor> out;
  for (int64_t i = 0; i < n; i += kRows) {
    const auto rows = x.narrow(0, i, std::min(kRows, n - i)).contiguous();
    serve::InferRequest r;
    r.model = "fashion";
    r.peer = peer;
    serve::InferInput in;
    in.name = serve::kInputName;
    in.datatype = "FP32";
    in.shape = rows.sizes().vec();
    in.values.assign(rows.data_ptr<float>(), rows.data_ptr<float>() + rows.numel());
    r.inputs.push_back(std::move(in));
    r.outputs.push_back({"probabilities", false});
    const auto resp = core.infer(r, "", "bench");
    out.push_back(torch::from_blob(const_cast<float*>(resp.outputs[0].fp32.data()), {rows.size(0), 10}).clone());
    if (s.flagged_at < 0) {
      for (const auto& e : core.guard().events().recent(4)) {
        if (e.detector == "extraction" && e.subject == serve::network_identity(peer, 24, 64)) {
          s.flagged_at = i + kRows;  // at the latest: some row of this request
          s.statistic = e.details.value("statistic", "");
        }
      }
    }
  }
  s.probs = torch::cat(out);
  return s;
}

// The rows and answers through a detector of its own: first flag (-1 none), lowest W, highest share.
struct Replay {
  int64_t flagged_at = -1;
  double min_w = 2, max_share = -1;
};
Replay replay(const detect::ExtractionOptions& o, const torch::Tensor& x, const torch::Tensor& probs) {
  detect::ExtractionDetector d(o);
  const auto logits = probs.clamp_min(1e-30).log().contiguous();
  const auto xs = x.contiguous();
  Replay r;
  for (int64_t i = 0; i < x.size(0); ++i) {
    const auto v = d.observe_rows("c", xs[i].data_ptr<float>(), 1, kImage, logits[i].data_ptr<float>(), 10, 0.0)[0];
    if (v.w >= 0) r.min_w = std::min(r.min_w, v.w);
    r.max_share = std::max(r.max_share, v.unsure_share);
    if (v.flagged && r.flagged_at < 0) r.flagged_at = i + 1;
  }
  return r;
}

double agreement(const Model& copy, const torch::Tensor& served_pred, const torch::Tensor& test_x) {
  const auto pred = copy.predict_logits(test_x).argmax(1);
  return pred.eq(served_pred).to(torch::kDouble).mean().item<double>();
}

// A fresh copy trained on the first n glyph queries and their served probabilities.
double train_copy(const data::Dataset& pool, const torch::Tensor& probs, int64_t n, int epochs, uint64_t seed,
                  const torch::Tensor& served_pred, const torch::Tensor& test_x) {
  data::Dataset d = pool.head(n, "queries");
  d.labels = torch::arange(n, torch::kLong);  // row index into the soft labels
  auto copy = bulwark::model::create_model("cnn", bulwark::model::default_spec(10), seed + 1);
  SoftLabels objective(probs.narrow(0, 0, n));
  const int64_t e = std::max<int64_t>(epochs, std::min<int64_t>(40, 8 * 5000 / std::max<int64_t>(n, 1)));
  train::TrainOptions t;
  t.epochs(e).batch_size(64).lr(1e-3).validation_fraction(0).seed(seed).progress(false);
  train::fit(copy, d, data::Dataset{}, t, objective);
  return agreement(copy, served_pred, test_x);
}

void print_replay(const char* name, const Replay& r) {
  std::printf("  %-34s flagged at %6lld   min W %.4f   max unsure share %.3f\n", name,
              static_cast<long long>(r.flagged_at), r.min_w > 1 ? -1.0 : r.min_w, r.max_share);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s MODEL GLYPH_DIR [queries=20000] [seed=0] [epochs=8]\n", argv[0]);
    return 2;
  }
  const std::string model_path = argv[1];
  const int64_t queries = argc > 3 ? std::atoll(argv[3]) : 20000;
  const uint64_t seed = argc > 4 ? std::strtoull(argv[4], nullptr, 10) : 0;
  const int epochs = argc > 5 ? std::atoi(argv[5]) : 8;
  const bool checkpoints = argc > 6 ? std::atoi(argv[6]) != 0 : true;
  torch::manual_seed(seed);
  const auto t0 = std::chrono::steady_clock::now();

  const auto test = data::load_dataset(data::kFashionMnistDir, data::Split::kTest);
  const auto fashion_train = data::load_dataset(data::kFashionMnistDir, data::Split::kTrain);
  auto glyphs = data::load_dataset(argv[2], data::Split::kTrain);
  glyphs = glyphs.select(data::seeded_permutation(glyphs.size(), seed)).head(std::min(queries, glyphs.size()), "queries");
  const auto test_x = test.inputs();
  const auto glyph_x = glyphs.inputs();
  const Model served = Model::load(model_path);
  const auto served_pred = served.predict_logits(test_x).argmax(1);
  setvbuf(stdout, nullptr, _IOLBF, 0);  // line by line, also into a file
  std::printf("served model %s: test accuracy %.4f; %lld glyph queries (seed %llu)\n", model_path.c_str(),
              served_pred.eq(test.labels).to(torch::kDouble).mean().item<double>(), static_cast<long long>(glyphs.size()),
              static_cast<unsigned long long>(seed));

  serve::CoreOptions co;
  co.access_log = "off";
  co.source.allow_unsigned = true;
  co.guard.scorer = "none";
  co.guard.monitor = false;
  co.guard.extraction = "flag";
  co.batching.max_batch = kRows;
  const detect::ExtractionOptions defaults = co.guard.extraction_options;
  std::printf("detector: %s\n", defaults.to_json().dump().c_str());
  serve::InferenceCore core(co);
  core.load_model("fashion", model_path);

  // Benign replays through the server (one client each, its own /24).
  std::printf("\nbenign (through the server core):\n");
  const auto benign = serve_stream(core, "10.0.1.1:1", test_x);
  const auto order = test.labels.argsort(/*stable=*/true);
  const auto sorted_x = test_x.index_select(0, order);
  const auto benign_sorted = serve_stream(core, "10.0.2.1:1", sorted_x);
  const auto prada_only = detect::ExtractionOptions(defaults).max_unsure_share(1).key(1);
  const auto unsure_only = detect::ExtractionOptions(defaults).delta(0).key(1);
  std::printf("  test set in order: server flag at %lld\n", static_cast<long long>(benign.flagged_at));
  print_replay("    PRADA alone", replay(prada_only, test_x, benign.probs));
  print_replay("    unsure share alone", replay(unsure_only, test_x, benign.probs));
  std::printf("  test set sorted by class: server flag at %lld\n", static_cast<long long>(benign_sorted.flagged_at));
  print_replay("    PRADA alone", replay(prada_only, sorted_x, benign_sorted.probs));
  print_replay("    unsure share alone", replay(unsure_only, sorted_x, benign_sorted.probs));

  // The thief.
  std::printf("\nknockoff (glyph queries, through the server core):\n");
  const auto thief = serve_stream(core, "10.0.3.1:1", glyph_x);
  const auto thief_prada = replay(prada_only, glyph_x, thief.probs);
  const auto thief_unsure = replay(unsure_only, glyph_x, thief.probs);
  std::printf("  server flag at query %lld (statistic %s)\n", static_cast<long long>(thief.flagged_at),
              thief.statistic.c_str());
  print_replay("    PRADA alone", thief_prada);
  print_replay("    unsure share alone", thief_unsure);

  // Evasion by dilution: k natural (Fashion-MNIST training) images per glyph; detector only.
  std::printf("\nmixed (k natural images per glyph; detector only, answers from the served model):\n");
  for (int k : {1, 2, 3}) {
    const int64_t g = std::min<int64_t>(glyph_x.size(0), 4000);
    const auto nat = fashion_train.inputs(torch::arange(g * k, torch::kLong));
    std::vector<torch::Tensor> rows;
    for (int64_t i = 0; i < g; ++i) {
      rows.push_back(glyph_x.narrow(0, i, 1));
      rows.push_back(nat.narrow(0, i * k, k));
    }
    const auto mixed = torch::cat(rows);
    const auto probs = torch::softmax(served.predict_logits(mixed), 1);
    const auto both = replay(defaults, mixed, probs);
    std::printf("  k=%d: flagged at %lld of %lld queries (%lld glyphs)\n", k, static_cast<long long>(both.flagged_at),
                static_cast<long long>(mixed.size(0)),
                static_cast<long long>(both.flagged_at < 0 ? g : both.flagged_at / (k + 1)));
    print_replay("    PRADA alone", replay(prada_only, mixed, probs));
    print_replay("    unsure share alone", replay(unsure_only, mixed, probs));
  }

  // The copy's agreement at checkpoints and at the server's flag.
  std::printf("\ncopy agreement with the served model (Fashion-MNIST test set), zoo cnn, soft labels:\n");
  std::vector<int64_t> points;
  if (thief.flagged_at > 0) points.push_back(thief.flagged_at);
  for (int64_t p : {500, 1000, 2000, 5000, 10000, 20000}) {
    if (checkpoints && p <= glyphs.size()) points.push_back(p);
  }
  for (int64_t p : points) {
    const auto ts = std::chrono::steady_clock::now();
    const double a = train_copy(glyphs, thief.probs, p, epochs, seed, served_pred, test_x);
    std::printf("  %6lld queries%s: agreement %.4f  (%.0f s)\n", static_cast<long long>(p),
                p == thief.flagged_at ? " (the flag)" : "", a,
                std::chrono::duration<double>(std::chrono::steady_clock::now() - ts).count());
    std::fflush(stdout);
  }
  std::printf("\ntotal %.0f s\n", std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  return 0;
}
