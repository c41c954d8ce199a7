#include <gtest/gtest.h>

#include <ATen/autocast_mode.h>
#include <torch/torch.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <map>
#include <memory>
#include <stdexcept>
#include <thread>

#include "attack/attack.h"
#include "core/cancel.h"
#include "core/error.h"
#include "data/dataset.h"
#include "model/model.h"
#include "model/zoo.h"
#include "train/train.h"
#include "test_util.h"

namespace bulwark::attack {
namespace {

// A small model trained once per test binary on 2k Fashion-MNIST images (undefended).
struct Trained {
  model::Model m;
  torch::Tensor x, y;  // 200 test points the model classifies correctly
};

const Trained& trained() {
  static const Trained t = [] {
    auto train = data::load_dataset("fashion-mnist", data::Split::kTrain).head(3000);
    auto test = data::load_dataset("fashion-mnist", data::Split::kTest).head(600);
    model::ModelSpec spec = model::default_spec();
    auto m = model::create_model("cnn-small", spec, 1);
    train::CrossEntropyObjective ce;
    train::fit(m, train, {}, train::TrainOptions().epochs(3).batch_size(64).progress(false), ce);
    m.set_parameters_require_grad(false);
    const auto x = test.inputs(), y = test.targets();
    const auto ok = m.predict_logits(x).argmax(1).eq(y).nonzero().squeeze(1).narrow(0, 0, 200);
    return Trained{m, x.index_select(0, ok), y.index_select(0, ok)};
  }();
  return t;
}

// An untrained model on 1x8x8 inputs: cheap enough for many randomized property checks.
model::Model tiny_model(uint64_t seed) {
  model::ModelSpec spec = model::default_spec();
  spec.input_shape = {1, 8, 8};
  auto m = model::create_model("mlp", spec, seed);
  m.set_parameters_require_grad(false);
  return m;
}

// A conv-BatchNorm classifier exported by Debian's PyTorch (fixtures/make_batchnorm_model.py),
// loaded fresh on each call; the script runs once per test binary.
model::Model batchnorm_model() {
  static const testing::TempDir dir;
  static const bool made = [] {
    const auto r = testing::run_command(std::string(testing::kPython) + " " + BULWARK_FIXTURES_DIR +
                                        "/make_batchnorm_model.py " + dir.path());
    if (r.exit_code != 0) throw std::runtime_error("make_batchnorm_model.py failed: " + r.output);
    return true;
  }();
  (void)made;
  auto m = model::Model::import_torchscript(dir.file("batchnorm_model.pt"), model::ModelSpec{});
  m.set_parameters_require_grad(false);
  return m;
}

std::unique_ptr<Attack> small_attack(const std::string& name, double eps, Norm norm, uint64_t seed) {
  AttackSettings s;
  s.norm = norm;
  s.seed = seed;
  s.pgd_steps = 5;
  s.apgd_steps = 10;
  s.square_queries = 40;
  s.target_classes = 3;
  return make_attack(name, eps, s);
}

TEST(Threat, EveryAttackStaysInTheBallAndRange) {
  const auto m = tiny_model(3);
  const auto f = logits_of(m);
  auto gen = make_generator(123);
  for (const auto norm : {Norm::kLinf, Norm::kL2}) {
    for (int trial = 0; trial < 4; ++trial) {
      const double eps = (norm == Norm::kLinf ? 0.5 : 3.0) * torch::rand({1}, gen).item<double>() + 0.01;
      // Inputs pushed against the range's edges, where clamping matters.
      auto x = torch::rand({24, 1, 8, 8}, gen);
      x = torch::where(x.lt(0.2), torch::zeros_like(x), torch::where(x.gt(0.8), torch::ones_like(x), x));
      const auto y = torch::randint(0, 10, {24}, gen);
      for (const auto& name : known_attacks()) {
        auto attack = small_attack(name, eps, norm, static_cast<uint64_t>(trial));
        const auto adv = attack->perturb(f, x, y);
        ASSERT_EQ(adv.sizes(), x.sizes()) << name;
        const auto d = (adv - x).flatten(1);
        const double size = norm == Norm::kLinf ? d.abs().amax(1).max().item<double>() : d.norm(2, 1).max().item<double>();
        EXPECT_LE(size, eps * (1 + 1e-5) + 1e-6) << name << " " << to_string(norm) << " eps " << eps;
        EXPECT_GE(adv.min().item<double>(), 0.0) << name;
        EXPECT_LE(adv.max().item<double>(), 1.0) << name;
      }
    }
  }
}

TEST(Threat, ProjectionMovesOutsidePointsOntoTheBall) {
  const Threat linf{Norm::kLinf, 0.1, 0, 1};
  const auto x = torch::full({1, 1, 2, 2}, 0.5);
  const auto far = torch::full({1, 1, 2, 2}, 0.9);
  EXPECT_TRUE(torch::allclose(linf.project(far, x), torch::full({1, 1, 2, 2}, 0.6)));
  const Threat l2{Norm::kL2, 0.2, 0, 1};
  const auto p = l2.project(far, x);
  EXPECT_NEAR(l2.norm_of(p - x).item<double>(), 0.2, 1e-6);
  EXPECT_THROW(Threat({Norm::kLinf, -0.1, 0, 1}).validate(), Error);
  EXPECT_THROW(parse_norm("l1"), Error);
}

TEST(Attacks, DeterministicGivenSeed) {
  const auto m = tiny_model(4);
  const auto f = logits_of(m);
  const auto x = torch::rand({16, 1, 8, 8}, make_generator(5));
  const auto y = torch::randint(0, 10, {16}, make_generator(6));
  for (const auto& name : known_attacks()) {
    const auto a = small_attack(name, 0.2, Norm::kLinf, 7)->perturb(f, x, y);
    const auto b = small_attack(name, 0.2, Norm::kLinf, 7)->perturb(f, x, y);
    EXPECT_TRUE(torch::equal(a, b)) << name;
  }
  // Randomised attacks change with the seed.
  for (const std::string name : {"pgd", "square"}) {
    const auto a = small_attack(name, 0.2, Norm::kLinf, 7)->perturb(f, x, y);
    const auto c = small_attack(name, 0.2, Norm::kLinf, 8)->perturb(f, x, y);
    EXPECT_FALSE(torch::equal(a, c)) << name;
  }
}

// A linear softmax classifier z = W x + b: the CE gradient w.r.t. x is W^T (softmax(z) - e_y).
TEST(Fgsm, MatchesTheClosedFormOnALinearModel) {
  torch::jit::Module lin("__torch__.bulwark.Linear");
  auto gen = make_generator(9);
  const auto w = torch::randn({10, 16}, gen), b = torch::randn({10}, gen);
  lin.register_parameter("w", w, false);
  lin.register_parameter("b", b, false);
  lin.define("def forward(self, x):\n    return torch.linear(torch.flatten(x, 1), self.w, self.b)\n");
  model::ModelSpec spec = model::default_spec();
  spec.input_shape = {1, 4, 4};
  const model::Model m(lin, spec);
  const auto x = 0.3 + 0.4 * torch::rand({5, 1, 4, 4}, gen);  // away from the range edges
  const auto y = torch::randint(0, 10, {5}, gen);
  const auto z = torch::linear(x.flatten(1), w, b);
  const auto grad = torch::matmul(torch::softmax(z, 1) - torch::one_hot(y, 10).to(torch::kFloat), w).view_as(x);

  const auto linf = Fgsm(FgsmOptions(0.05)).perturb(logits_of(m), x, y);
  EXPECT_TRUE(torch::allclose(linf - x, 0.05 * grad.sign(), 1e-6, 1e-6));
  const auto l2 = Fgsm(FgsmOptions(0.5).norm(Norm::kL2)).perturb(logits_of(m), x, y);
  const auto expected = 0.5 * grad / grad.flatten(1).norm(2, 1).view({-1, 1, 1, 1});
  EXPECT_TRUE(torch::allclose(l2 - x, expected, 1e-5, 1e-6));
}

// Paper: p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06); checks at ceil(p_j N).
TEST(Apgd, CheckpointScheduleMatchesThePaperForN100) {
  std::vector<int64_t> paper;
  int64_t prev = 0, cur = 22;  // in hundredths, so N = 100 needs no rounding
  while (cur <= 100) {
    paper.push_back(cur);
    const int64_t next = cur + std::max<int64_t>(cur - prev - 3, 6);
    prev = cur;
    cur = next;
  }
  EXPECT_EQ(paper, (std::vector<int64_t>{22, 41, 57, 70, 80, 87, 93, 99}));
  EXPECT_EQ(apgd_checkpoints(100), paper);
}

TEST(Losses, DlrMatchesHandComputation) {
  // y not on top: -(z_y - max_other) / (z_pi1 - z_pi3) = -(3 - 5) / (5 - 2).
  auto z = torch::tensor({{1.0f, 3.0f, 2.0f, 5.0f, 0.0f}});
  EXPECT_NEAR(dlr_loss(z, torch::tensor({1})).item<double>(), 2.0 / 3.0, 1e-6);
  // y on top: the runner-up is the competitor: -(4 - 3) / (4 - 1).
  auto z2 = torch::tensor({{4.0f, 1.0f, 3.0f, 0.5f}});
  EXPECT_NEAR(dlr_loss(z2, torch::tensor({0})).item<double>(), -1.0 / 3.0, 1e-6);
  // Targeted: -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2) = -(4 - 3) / (4 - 0.75).
  EXPECT_NEAR(dlr_targeted_loss(z2, torch::tensor({0}), torch::tensor({2})).item<double>(), -1.0 / 3.25, 1e-6);
  // Margin: max_other - z_y.
  EXPECT_NEAR(margin_loss(z, torch::tensor({1})).item<double>(), 2.0, 1e-6);
  // DLR is invariant to shifting and scaling the logits.
  EXPECT_NEAR(dlr_loss(z * 3 + 7, torch::tensor({1})).item<double>(), 2.0 / 3.0, 1e-5);
}

TEST(Square, FindsAdversarialsOnAnUndefendedModelWithinItsBudget) {
  const auto& t = trained();
  const auto x = t.x.narrow(0, 0, 60), y = t.y.narrow(0, 0, 60);
  Square square(SquareOptions(0.15).queries(300).seed(1));
  const auto adv = square.perturb(logits_of(t.m), x, y);
  const double success = t.m.predict_logits(adv).argmax(1).ne(y).to(torch::kFloat).mean().item<double>();
  EXPECT_GE(success, 0.6) << "square success " << success;
  EXPECT_LE(square.queries().max().item<double>(), 301);
  EXPECT_GE(square.queries().min().item<double>(), 1);
}

// Square's queries run on the search forward; whether a point is fooled is the LogitsFn's own call.
// A search forward that calls every point fooled (all logits equal: margin 0) stops each search at
// its first query; a point may then count as fooled only where the model itself misclassifies it.
TEST(Square, QueriesSteerWithTheSearchForwardAndTheModelDecides) {
  const auto& t = trained();
  const auto x = t.x.narrow(0, 0, 40), y = t.y.narrow(0, 0, 40);
  int64_t searched = 0;
  auto f = logits_of(t.m);
  f.with_window_forward(nullptr);  // else L∞ queries go to the window engine (the next test)
  f.with_search_forward([&searched]() -> LogitsFn::Forward {
    return [&searched](const torch::Tensor& b) {
      searched += b.size(0);
      return torch::zeros({b.size(0), 10});
    };
  });
  Square square(SquareOptions(0.05).queries(200).seed(3));
  const auto adv = square.perturb(f, x, y);
  EXPECT_GT(searched, 0) << "the queries went to the search forward";
  EXPECT_LE(square.queries().max().item<double>(), 1) << "a fooled-looking point stops its search";
  const auto moved = (adv - x).flatten(1).abs().amax(1).gt(0);
  const auto wrong = t.m.predict_logits(adv).argmax(1).ne(y);
  EXPECT_TRUE(torch::equal(moved, wrong)) << "returned as adversarial only where the model misclassifies";
  EXPECT_LT(wrong.sum().item<int64_t>(), x.size(0)) << "the search forward's verdict was not taken";
}

// For a model that qualifies, L∞ queries run on the window engine (model/window_forward.h): the
// same search as on the frozen copy up to float rounding — the same points fooled with the same
// queries — while the search forward is never called.
TEST(Square, LinfQueriesOnTheWindowEngineSearchAsTheFrozenCopyDoes) {
  const auto& t = trained();
  const auto x = t.x.narrow(0, 0, 40), y = t.y.narrow(0, 0, 40);
  auto engine_f = logits_of(t.m);
  ASSERT_NE(engine_f.window_forward(x.size(0)), nullptr) << "cnn-small qualifies";
  int64_t searched = 0;
  engine_f.with_search_forward([&searched]() -> LogitsFn::Forward {
    return [&searched](const torch::Tensor& b) {
      searched += b.size(0);
      return torch::zeros({b.size(0), 10});
    };
  });
  auto frozen_f = logits_of(t.m);
  frozen_f.with_window_forward(nullptr);
  Square with_engine(SquareOptions(0.08).queries(300).seed(5));
  Square with_frozen(SquareOptions(0.08).queries(300).seed(5));
  const auto adv_engine = with_engine.perturb(engine_f, x, y);
  const auto adv_frozen = with_frozen.perturb(frozen_f, x, y);
  EXPECT_EQ(searched, 0);
  const auto fooled_engine = t.m.predict_logits(adv_engine).argmax(1).ne(y);
  const auto fooled_frozen = t.m.predict_logits(adv_frozen).argmax(1).ne(y);
  EXPECT_GT(fooled_frozen.sum().item<int64_t>(), 0);
  EXPECT_LT(fooled_frozen.sum().item<int64_t>(), x.size(0));
  EXPECT_TRUE(torch::equal(fooled_engine, fooled_frozen));
  EXPECT_TRUE(torch::equal(with_engine.queries(), with_frozen.queries()));
  EXPECT_LE((adv_engine - adv_frozen).abs().max().item<double>(), 1e-6);
}

// logits_of(model).search_forward() is the frozen copy: the model's logits to float rounding.
TEST(Square, ModelSearchForwardMatchesTheLogits) {
  const auto& t = trained();
  const auto x = t.x.narrow(0, 0, 16);
  const auto f = logits_of(t.m);
  const auto z = f.search_forward()(x);
  const auto want = t.m.predict_logits(x);
  EXPECT_LE((z - want).abs().max().item<double>(), 1e-5 * (want.abs().max().item<double>() + 1));
  EXPECT_FALSE(z.requires_grad());
}

TEST(Attacks, StrongerAttacksNeverReportHigherAccuracy) {
  const auto& t = trained();
  SuiteOptions o;
  o.attacks = {"fgsm", "pgd", "apgd-ce"};
  o.eps = {0.1, 0.03};
  o.settings.apgd_steps = 20;
  o.progress = false;
  const auto r = evaluate_robustness(logits_of(t.m), t.x.narrow(0, 0, 100), t.y.narrow(0, 0, 100), o);
  ASSERT_EQ(r.rows.size(), 6u);
  EXPECT_DOUBLE_EQ(r.clean_accuracy, 1.0);
  for (size_t e = 0; e < 2; ++e) {
    const auto& fgsm = r.rows[3 * e];
    const auto& pgd = r.rows[3 * e + 1];
    EXPECT_EQ(fgsm.attack, "fgsm");
    EXPECT_LE(pgd.robust_accuracy, fgsm.robust_accuracy) << "eps " << pgd.eps;
    for (size_t a = 0; a < 3; ++a) EXPECT_LE(r.worst[e].robust_accuracy, r.rows[3 * e + a].robust_accuracy);
  }
  EXPECT_LT(r.rows[0].eps, r.rows[3].eps) << "eps are reported in ascending order";
  EXPECT_LT(r.worst[1].robust_accuracy, r.worst[0].robust_accuracy - 0.2) << "accuracy must fall as eps grows";
}

// The closed loop's stop reaches the suite inside an attack: a flag set while a PGD that would run
// for minutes (100,000 steps at an eps too small to fool most points) is at work ends it with
// Cancelled at the next iteration; a flag set before the call ends it before any attack.
TEST(Attacks, ACancelFlagStopsTheSuiteAtTheNextIteration) {
  const auto& t = trained();
  SuiteOptions o;
  o.attacks = {"pgd"};
  o.eps = {0.002};
  o.settings.pgd_steps = 100000;
  o.progress = false;
  o.masking_checks = false;
  auto flag = std::make_shared<std::atomic<bool>>(false);
  o.cancel = flag;
  std::thread canceller([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    flag->store(true);
  });
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_THROW(evaluate_robustness(logits_of(t.m), t.x.narrow(0, 0, 100), t.y.narrow(0, 0, 100), o), Cancelled);
  const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  canceller.join();
  EXPECT_GE(took, 0.3) << "it ran until the flag was set";
  EXPECT_LT(took, 30.0) << "stopped at an iteration, not at the end of 100,000";
  EXPECT_THROW(evaluate_robustness(logits_of(t.m), t.x.narrow(0, 0, 10), t.y.narrow(0, 0, 10), o), Cancelled);
}

// Golden check against PGD written in plain PyTorch on the same model and points. Without random
// start and early stopping both are deterministic, so the iterates must agree.
TEST(Pgd, AgreesWithAPyTorchReference) {
  const auto& t = trained();
  testing::TempDir dir;
  const int64_t n = 40;
  const auto x = t.x.narrow(0, 0, n), y = t.y.narrow(0, 0, n);
  t.m.save(dir.file("m.pt"));
  testing::write_floats(dir.file("x.bin"), x);
  testing::write_floats(dir.file("y.bin"), y.to(torch::kFloat));
  const auto r = testing::run_command(std::string(testing::kPython) + " " + BULWARK_FIXTURES_DIR + "/pgd_reference.py " +
                                      dir.file("m.pt") + " " + dir.file("x.bin") + " " + dir.file("y.bin") + " " +
                                      std::to_string(n) + " 0.1 10 " + dir.file("adv.bin"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto reference = testing::read_floats(dir.file("adv.bin"), {n, 1, 28, 28});
  Pgd pgd(PgdOptions(0.1).steps(10).step_size(0.025).random_start(false).early_stop(false));
  const auto ours = pgd.perturb(logits_of(t.m), x, y);
  const double close = (ours - reference).abs().le(1e-5).to(torch::kFloat).mean().item<double>();
  EXPECT_GE(close, 0.999) << "fraction of pixels matching the reference: " << close;
  EXPECT_TRUE(torch::equal(t.m.predict_logits(ours).argmax(1), t.m.predict_logits(reference).argmax(1)));
}

TEST(Evaluate, AutoCascadeIsCumulative) {
  const auto& t = trained();
  SuiteOptions o;
  o.attacks = auto_attacks();
  o.cascade = true;
  o.eps = {0.02};
  o.settings.apgd_steps = 10;
  o.settings.square_queries = 30;
  o.settings.target_classes = 2;
  o.progress = false;
  o.masking_checks = false;
  const auto r = evaluate_robustness(logits_of(t.m), t.x.narrow(0, 0, 60), t.y.narrow(0, 0, 60), o);
  ASSERT_EQ(r.rows.size(), 3u);
  EXPECT_EQ(r.rows[1].attack, "+apgd-t");
  EXPECT_LE(r.rows[1].robust, r.rows[0].robust);
  EXPECT_LE(r.rows[2].robust, r.rows[1].robust);
  EXPECT_EQ(r.rows[1].attacked, r.rows[0].robust) << "later attacks only run on points still standing";
  EXPECT_EQ(r.worst[0].robust, r.rows[2].robust);
}

// A quantising preprocessor has zero gradient almost everywhere: plain PGD through it is stuck,
// BPDA's straight-through gradient is not, and the masking probe notices.
TEST(Bpda, SeesThroughANonDifferentiablePreprocessor) {
  const auto& t = trained();
  const auto x = t.x.narrow(0, 0, 50), y = t.y.narrow(0, 0, 50);
  const Preprocess quantise = [](const torch::Tensor& v) { return torch::round(v * 4) / 4; };
  const auto base = logits_of(t.m);
  const LogitsFn masked = [&](const torch::Tensor& v) { return base(torch::round(v * 4) / 4); };
  const LogitsFn through = bpda(base, quantise);
  SuiteOptions o;
  o.attacks = {"pgd"};
  o.eps = {0.2};
  o.progress = false;
  const auto naive = evaluate_robustness(masked, x, y, o);
  const auto adaptive = evaluate_robustness(through, x, y, o);
  EXPECT_LT(adaptive.rows[0].robust_accuracy, naive.rows[0].robust_accuracy);
  bool warned = false;
  for (const auto& w : naive.warnings) warned |= w.find("all-zero input gradient") != std::string::npos;
  EXPECT_TRUE(warned) << "the zero-gradient probe should fire on the masked model";
}

TEST(Evaluate, ConsistencyChecksFlagMasking) {
  RobustnessReport r;
  AttackRow a;
  a.attack = "pgd";
  a.eps = 0.1;
  a.robust_accuracy = 0.40;
  AttackRow b = a;
  b.eps = 0.2;
  b.robust_accuracy = 0.55;  // rises with eps
  AttackRow s = a;
  s.attack = "square";
  s.robust_accuracy = 0.30;  // black-box beats white-box by 10 points
  r.rows = {a, b, s};
  check_report_consistency(r);
  ASSERT_EQ(r.warnings.size(), 2u);
  EXPECT_NE(r.warnings[0].find("must not increase"), std::string::npos) << r.warnings[0];
  EXPECT_NE(r.warnings[1].find("beats the white-box"), std::string::npos) << r.warnings[1];
}

// Attacks judge the model as it is deployed, in eval mode, whatever mode it arrives in: BatchNorm
// normalises with its running statistics and leaves them alone. Each submodule gets its own mode
// back (here a model being fine-tuned with its head frozen in eval mode).
TEST(Attacks, RunTheModelInEvalModeAndHandBackItsMode) {
  const auto test = data::load_dataset("fashion-mnist", data::Split::kTest).head(32);
  const auto x = test.inputs(), y = test.targets();
  const auto reference = batchnorm_model();  // loaded in eval mode
  auto m = batchnorm_model();
  m.set_training(true);
  for (auto child : m.module().named_children()) {
    if (child.name == "fc") child.value.eval();
  }
  std::map<std::string, bool> modes;
  for (const auto& sub : m.module().named_modules()) modes[sub.name] = sub.value.is_training();
  std::map<std::string, torch::Tensor> buffers;
  for (const auto& b : m.module().named_buffers()) buffers[b.name] = b.value.clone();

  for (const std::string name : {"fgsm", "pgd", "apgd-ce", "square"}) {
    const auto expected = small_attack(name, 0.1, Norm::kLinf, 3)->perturb(logits_of(reference), x, y);
    const auto adv = small_attack(name, 0.1, Norm::kLinf, 3)->perturb(logits_of(m), x, y);
    EXPECT_TRUE(torch::allclose(adv, expected)) << name << ": not the eval-mode attack";
  }
  for (const auto& b : m.module().named_buffers()) EXPECT_TRUE(torch::equal(b.value, buffers[b.name])) << b.name;
  for (const auto& sub : m.module().named_modules()) {
    EXPECT_EQ(sub.value.is_training(), modes[sub.name]) << "module '" << sub.name << "'";
  }
}

// --precision bf16 changes the passes that compute a gradient and nothing else: without autograd
// the logits are fp32's to the bit; with it they are bf16's (close to fp32's, not equal), the
// gradient points the same way, and the thread's autocast switch is off again afterwards.
TEST(Precision, Bf16OnlyWhereAGradientIsComputed) {
  const auto& t = trained();
  const auto x = t.x.narrow(0, 0, 64);
  const auto f32 = logits_of(t.m), f16 = logits_of(t.m, Precision::kBf16);
  {
    torch::NoGradGuard no_grad;
    EXPECT_TRUE(torch::equal(f16(x), f32(x))) << "a forward pass without autograd must stay fp32";
  }
  auto grad_and_logits = [&](const LogitsFn& f) {
    const auto xr = x.clone().requires_grad_(true);
    const auto z = f(xr);
    const auto loss = ce_loss(z, t.y.narrow(0, 0, 64)).sum();
    return std::make_pair(torch::autograd::grad({loss}, {xr})[0], z.detach());
  };
  const auto [g32, z32] = grad_and_logits(f32);
  const auto [g16, z16] = grad_and_logits(f16);
  EXPECT_FALSE(at::autocast::is_cpu_enabled());
  EXPECT_EQ(z16.scalar_type(), torch::kFloat);
  const double diff = (z16 - z32).abs().max().item<double>(), scale = z32.abs().max().item<double>();
  EXPECT_GT(diff, 0.0) << "the gradient pass did not run in bf16";
  EXPECT_LT(diff, 0.05 * scale);
  const double cosine = (g16 * g32).sum().item<double>() / (g16.norm() * g32.norm()).item<double>();
  EXPECT_GT(cosine, 0.95);
}

// logits_of's fp32 gradient passes run on a channels-last copy of the input: the gradient and
// logits equal the NCHW model's to float rounding, the gradient has the input's shape, and a pass
// without autograd is the NCHW forward to the bit.
TEST(Precision, Fp32GradientPassesInChannelsLastEqualNchwToRounding) {
  const auto& t = trained();
  const auto x = t.x.narrow(0, 0, 64), y = t.y.narrow(0, 0, 64);
  const LogitsFn nchw = [&](const torch::Tensor& v) {
    model::EvalMode eval(t.m);
    return t.m.logits(v);
  };
  const auto f = logits_of(t.m);
  {
    torch::NoGradGuard no_grad;
    EXPECT_TRUE(torch::equal(f(x), nchw(x)));
  }
  const auto a = input_gradient(f, x, [&](const torch::Tensor& z, int64_t s, int64_t len) { return ce_loss(z, y.narrow(0, s, len)); }, 64);
  const auto b = input_gradient(nchw, x, [&](const torch::Tensor& z, int64_t s, int64_t len) { return ce_loss(z, y.narrow(0, s, len)); }, 64);
  ASSERT_EQ(a.grad.sizes(), x.sizes());
  const double scale = b.grad.abs().max().item<double>();
  EXPECT_GT(scale, 0.0);
  EXPECT_LT((a.grad - b.grad).abs().max().item<double>(), 1e-4 * scale);
  EXPECT_TRUE(torch::allclose(a.logits, b.logits, 1e-5, 1e-5)) << (a.logits - b.logits).abs().max();
}

// With channels_last_gradients() off (`--nchw` runs, the benches' "before" sides) the gradient
// passes run in NCHW: their logits are the verdict pass's bit for bit, so the fp32 LogitsFn says it is
// exact, and ChannelsLast(m, false) turns it off for its scope only.
TEST(Precision, NchwGradientPassesAreExactWhenTheModelAsksForThem) {
  const auto& t = trained();
  model::Model m = t.m;  // shares the module; the switch is this copy's
  const auto x = t.x.narrow(0, 0, 64), y = t.y.narrow(0, 0, 64);
  const auto loss = [&](const torch::Tensor& z, int64_t s, int64_t len) { return ce_loss(z, y.narrow(0, s, len)); };
  ASSERT_TRUE(m.channels_last_gradients());
  EXPECT_FALSE(logits_of(m).exact_gradient_pass());
  torch::Tensor verdict;
  {
    torch::NoGradGuard no_grad;
    model::EvalMode eval(m);
    verdict = m.logits(x);
  }
  const auto cl = input_gradient(logits_of(m), x, loss, 64);
  {
    model::ChannelsLast nchw_run(m, false);
    EXPECT_FALSE(m.channels_last_gradients());
    const auto f = logits_of(m);
    EXPECT_TRUE(f.exact_gradient_pass());
    EXPECT_FALSE(logits_of(m, Precision::kBf16).exact_gradient_pass());
    const auto nchw = input_gradient(f, x, loss, 64);
    EXPECT_TRUE(torch::equal(nchw.logits, verdict));
    // The channels-last pass is the same function, summed in another order.
    EXPECT_TRUE(torch::allclose(cl.grad, nchw.grad, 1e-4, 1e-6));
  }
  EXPECT_TRUE(m.channels_last_gradients());
  EXPECT_FALSE(logits_of(m).exact_gradient_pass());
}

// Early stopping retires a point only when a forward pass without autograd agrees it is
// misclassified: logits_of's gradient passes (bf16, or fp32 in channels-last) are only a hint, and
// the flagged points are rechecked; an exact gradient pass's logits are the verdict, and nothing
// is recomputed.
TEST(Precision, EarlyStopRetiresOnlyPointsTheVerdictPassMisclassifies) {
  const auto& t = trained();
  const auto f = logits_of(t.m), f16 = logits_of(t.m, Precision::kBf16);
  const auto adv = small_attack("pgd", 0.2, Norm::kLinf, 1)->perturb(f, t.x, t.y);
  torch::Tensor truth;
  {
    torch::NoGradGuard no_grad;
    truth = torch::cat({torch::zeros({100}, torch::kBool), f(adv.narrow(0, 100, 100)).argmax(1).ne(t.y.narrow(0, 100, 100))});
  }
  ASSERT_GT(truth.sum().item<int64_t>(), 50) << "pgd at eps 0.2 should fool most of the undefended model's points";
  // Logits that call every point misclassified, for clean points (the model is right on all of
  // them) and adversarial ones (it is wrong on `truth`).
  const auto points = torch::cat({t.x.narrow(0, 0, 100), adv.narrow(0, 100, 100)});
  const auto lying = torch::one_hot((t.y + 1) % 10, 10).to(torch::kFloat);
  AttackCost cost;
  const auto wrong = confirmed_misclassified(f16, points, t.y, lying, 64, cost);
  EXPECT_TRUE(torch::equal(wrong, truth));
  EXPECT_EQ(cost.forward_passes, 200);
  AttackCost none;
  const auto honest = torch::one_hot(t.y, 10).to(torch::kFloat);
  EXPECT_FALSE(confirmed_misclassified(f16, points, t.y, honest, 64, none).any().item<bool>());
  EXPECT_EQ(none.forward_passes, 0) << "points the gradient pass calls right are not rechecked";
  AttackCost fp32;
  EXPECT_TRUE(torch::equal(confirmed_misclassified(f, points, t.y, lying, 64, fp32), truth))
      << "fp32 gradient passes run channels-last: their logits are rechecked too";
  EXPECT_EQ(fp32.forward_passes, 200);
  const LogitsFn nchw = [&](const torch::Tensor& v) {
    model::EvalMode eval(t.m);
    return t.m.logits(v);
  };
  AttackCost exact;
  EXPECT_TRUE(confirmed_misclassified(nchw, points, t.y, lying, 64, exact).all().item<bool>())
      << "an exact gradient pass's logits are the verdict";
  EXPECT_EQ(exact.forward_passes, 0) << "nothing to recheck after an exact gradient pass";
}

// Whether a LogitsFn's gradient passes are exact travels with it through the wrappers the attack
// command builds (BPDA, a preprocessor in front); any other callable is exact.
TEST(Precision, WrappersKeepWhetherTheGradientPassIsExact) {
  const auto& t = trained();
  const Preprocess quantise = [](const torch::Tensor& v) { return torch::round(v * 4) / 4; };
  EXPECT_FALSE(logits_of(t.m).exact_gradient_pass()) << "fp32 gradient passes run channels-last";
  EXPECT_FALSE(logits_of(t.m, Precision::kBf16).exact_gradient_pass());
  EXPECT_FALSE(bpda(logits_of(t.m), quantise).exact_gradient_pass());
  const LogitsFn plain = [](const torch::Tensor& v) { return v.flatten(1); };
  EXPECT_TRUE(plain.exact_gradient_pass());
  EXPECT_TRUE(bpda(plain, quantise).exact_gradient_pass());
}

// bf16 gradient passes attack about as well as fp32 ones on the same points (bench/attack_throughput
// holds the 0.3-point line on 1,000 images; 200 points here, at an eps where accuracy is mid-range).
TEST(Precision, Bf16PgdAndApgdReachAboutFp32sRobustAccuracy) {
  const auto& t = trained();
  for (const std::string name : {"pgd", "apgd-ce"}) {
    AttackSettings s;
    s.pgd_steps = 10;
    s.apgd_steps = 20;
    auto robust = [&](Precision p) {
      const auto adv = make_attack(name, 0.03, s)->perturb(logits_of(t.m, p), t.x, t.y);
      torch::NoGradGuard no_grad;
      return logits_of(t.m)(adv).argmax(1).eq(t.y).to(torch::kFloat).mean().item<double>();
    };
    const double a32 = robust(Precision::kFp32), a16 = robust(Precision::kBf16);
    EXPECT_GT(a32, 0.05) << name << ": eps too large for a comparison";
    EXPECT_LT(a32, 0.95) << name << ": eps too small for a comparison";
    EXPECT_NEAR(a16, a32, 0.03) << name;
  }
}

TEST(Factory, BadArgumentsNameTheFlag) {
  auto expect_flag = [](auto&& call, const std::string& flag) {
    try {
      call();
      FAIL() << flag;
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::kInvalidArgument);
      EXPECT_NE(std::string(e.what()).find(flag), std::string::npos) << e.what();
    }
  };
  expect_flag([] { parse_attack_list("pgd,cw"); }, "--attacks");
  expect_flag([] { parse_attack_list(""); }, "--attacks");
  expect_flag([] { parse_eps_list("0.1,-0.2"); }, "--eps");
  expect_flag([] { parse_eps_list("0.1,abc"); }, "--eps");
  expect_flag([] { PgdOptions(0.1).steps(0); }, "--steps");
  expect_flag([] { PgdOptions(-1); }, "--eps");
  expect_flag([] { SquareOptions(0.1).queries(0); }, "--queries");
  expect_flag([] { ApgdOptions(0.1).rho(2); }, "--rho");
  expect_flag([] { parse_precision("fp16"); }, "--precision");
  expect_flag([] { parse_precision("BF16", "--attack-precision"); }, "--attack-precision");
  EXPECT_EQ(parse_precision("bf16"), Precision::kBf16);
  EXPECT_EQ(parse_precision("fp32"), Precision::kFp32);
  EXPECT_EQ(parse_attack_list("auto"), auto_attacks());
  EXPECT_EQ(parse_eps_list(" 0.2, 0.1 "), (std::vector<double>{0.2, 0.1}));
}

}  // namespace
}  // namespace bulwark::attack
