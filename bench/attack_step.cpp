// bench/attack_step — where the time of the attack step goes, and which levers shorten it without
// changing results. The step (forward plus input-gradient pass of a TorchScript classifier on a
// batch) dominates PGD/APGD evaluation and adversarial training alike. Measured here:
//   1. the machine's peak: fp32 and bf16 GEMM (torch::mm) at torch's thread count;
//   2. FLOPs per image-step, counted from the model's conv/linear ops seen by LibTorch's profiler
//      (2·MACs of a forward, ×2 for the input-gradient backward);
//   3. the PGD step loop (eps 0.1, no early stop: every image takes every step, seed 0) on the
//      module's untouched forward graph (the reference: Bulwark before model/forward_graph.h), as
//      the library runs it now (the rewritten graph, batch 256), and with one lever more per row —
//      batch size, channels_last, oneDNN off, bf16 (autocast, or bf16 weights), TorchScript's
//      optimizing executor without and with the TensorExpr fuser — each with median seconds, the
//      ratio to the reference, GFLOP/s, fraction of fp32 peak, and the robust accuracy it produces
//      plus its largest pixel difference from the reference's adversarial points, so a lever that
//      changes results shows;
//   4. a per-op profile (self time) of input_gradient at batch 256, untouched and rewritten, and for
//      the fastest variant whose robust accuracy stays within 0.3 pt of the reference's.
// The executor rows run last: their switches are process-wide.
//
// usage: attack_step MODEL [n=1000] [steps=20] [reps=3]
#include <ATen/Version.h>
#include <ATen/autocast_mode.h>
#include <torch/csrc/autograd/profiler_legacy.h>
#include <torch/csrc/jit/passes/tensorexpr_fuser.h>
#include <torch/csrc/jit/python/update_graph_executor_opt.h>
#include <torch/csrc/jit/runtime/graph_executor.h>
#include <torch/script.h>
#include <torch/torch.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "attack/attack.h"
#include "profile.h"
#include "core/system.h"
#include "data/dataset.h"
#include "model/model.h"

namespace torch::jit {
// Declared in torch/csrc/jit/codegen/fuser/interface.h, which Debian's LibTorch 1.13 does not install.
TORCH_API void overrideCanFuseOnCPU(bool value);
TORCH_API bool canFuseOnCPU();
}  // namespace torch::jit

namespace {

namespace attack = bulwark::attack;
using bulwark::bench::profile_ranges;
using bulwark::bench::Range;
using bulwark::bench::Shapes;
using bulwark::model::Model;
using Clock = std::chrono::steady_clock;

double since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// ---- 1. machine peak --------------------------------------------------------------------------

// Best of up to 5 products of two size x size matrices, within about 2 s (bf16 may have no fast kernel).
double gemm_gflops(torch::ScalarType dtype, int64_t size) {
  const auto a = torch::rand({size, size}).to(dtype), b = torch::rand({size, size}).to(dtype);
  double best = 1e30, spent = 0;
  for (int i = 0; i < 5 && spent < 2.0; ++i) {
    const auto t0 = Clock::now();
    (void)torch::mm(a, b);
    const double s = since(t0);
    best = std::min(best, s);
    spent += s;
  }
  return 2.0 * static_cast<double>(size * size * size) / best / 1e9;
}

// at::native::get_cpu_capability() is not exported by this LibTorch; show_config() prints it.
std::string cpu_capability() {
  const std::string cfg = at::show_config(), key = "CPU capability usage: ";
  const auto at = cfg.find(key);
  if (at == std::string::npos) return "unknown";
  const auto from = at + key.size();
  return cfg.substr(from, cfg.find('\n', from) - from);
}

// ATen's kernels and oneDNN dispatch on the ISA separately: oneDNN may run bf16 on AMX where ATen says AVX2.
std::string cpu_flags() {
  std::ifstream in("/proc/cpuinfo");
  std::string line, out;
  while (std::getline(in, line) && line.rfind("flags", 0) != 0) {
  }
  line += " ";
  for (const std::string f : {"avx2", "avx512f", "avx512_bf16", "amx_bf16"}) {
    if (line.find(" " + f + " ") != std::string::npos) out += (out.empty() ? "" : " ") + f;
  }
  return out.empty() ? "none of avx2/avx512f/avx512_bf16/amx_bf16" : out;
}

// ---- 2. FLOPs from the model's layers ---------------------------------------------------------

enum class OpFamily { kOther, kConv, kMatmul };

OpFamily family(const std::string& name) {
  static const std::string conv =
      " aten::conv2d aten::convolution aten::_convolution aten::_convolution_mode aten::mkldnn_convolution"
      " aten::_slow_conv2d_forward aten::thnn_conv2d bulwark::conv2d ";  // the last: model/conv2d.h
  static const std::string mm = " aten::linear aten::addmm aten::mm aten::matmul ";
  if (conv.find(" " + name + " ") != std::string::npos) return OpFamily::kConv;
  if (mm.find(" " + name + " ") != std::string::npos) return OpFamily::kMatmul;
  return OpFamily::kOther;
}

int64_t prod(const std::vector<int64_t>& v, size_t from, size_t to) {
  int64_t p = 1;
  for (size_t i = from; i < to; ++i) p *= v[i];
  return p;
}

// Forward FLOPs per image (2·MACs of the outermost conv/matmul ops), or 0 with the reason in `why`.
// The profiler records input shapes only, so a conv's output size is read off the next op at the
// same level (its consumer: relu, batch norm, pooling), which must take [N, O, H, W].
double forward_flops_per_image(const Model& m, const torch::Tensor& x, std::string& why) {
  torch::NoGradGuard no_grad;
  const auto f = attack::logits_of(m);
  const auto ranges = profile_ranges(true, [&] { (void)f(x); });
  double flops = 0;
  int counted = 0;
  for (size_t i = 0; i < ranges.size(); ++i) {
    const Range& r = ranges[i];
    const OpFamily fam = family(r.name);
    if (fam == OpFamily::kOther) continue;
    bool nested = false;
    for (int p = r.parent; p >= 0 && !nested; p = ranges[p].parent) nested = family(ranges[p].name) != OpFamily::kOther;
    if (nested) continue;
    const Shapes& s = r.shapes;
    if (fam == OpFamily::kMatmul) {
      const bool addmm = r.name == "aten::addmm";
      const size_t a = addmm ? 1 : 0, b = a + 1;
      if (s.size() <= b || s[a].empty() || s[b].size() != 2) {
        why = r.name + ": no input shapes recorded";
        return 0;
      }
      const int64_t k = s[a].back(), out = r.name == "aten::linear" ? s[b][0] : s[b][1];
      flops += 2.0 * static_cast<double>(prod(s[a], 0, s[a].size() - 1) * k * out);
    } else {
      if (s.size() < 2 || s[0].size() != 4 || s[1].size() != 4) {
        why = r.name + ": no 4-D input/weight shapes recorded";
        return 0;
      }
      size_t next = i + 1;
      while (next < ranges.size() && ranges[next].parent != r.parent) ++next;
      const bool ok = next < ranges.size() && !ranges[next].shapes.empty() && ranges[next].shapes[0].size() == 4 &&
                      ranges[next].shapes[0][0] == s[0][0] && ranges[next].shapes[0][1] == s[1][0];
      if (!ok) {
        why = r.name + ": output size not found (no [N, O, H, W] consumer after it)";
        return 0;
      }
      const auto& o = ranges[next].shapes[0];
      flops += 2.0 * static_cast<double>(o[0] * o[1] * o[2] * o[3] * prod(s[1], 1, 4));
    }
    ++counted;
  }
  if (counted == 0) why = "no conv/linear ops with shapes in the profile";
  return counted == 0 ? 0 : flops / static_cast<double>(x.size(0));
}

// ---- 3. the step loop, one lever per variant --------------------------------------------------

// One way of running the step. enter/leave switch process-wide settings on for its runs only.
struct Variant {
  Variant(std::string name_, attack::LogitsFn f_, int64_t batch_ = 256)
      : name(std::move(name_)), f(std::move(f_)), batch(batch_) {}
  std::string name;
  attack::LogitsFn f;
  int64_t batch = 256;
  bool channels_last = false;
  std::function<void()> enter = [] {}, leave = [] {};
  int warmups = 1;
  // Results; error is set instead when the variant could not run.
  double seconds = 0, robust_accuracy = 0, max_abs_diff = 0;
  std::string error;
};

class Switched {
 public:
  explicit Switched(const Variant& v) : v_(v) { v_.enter(); }
  ~Switched() { v_.leave(); }

 private:
  const Variant& v_;
};

// Logits of a model the function owns (the variant's own converted copy); bf16 models get a bf16
// input and return float logits, so the loss and gradient stay fp32.
attack::LogitsFn owning_logits(Model m, bool bf16 = false) {
  auto owned = std::make_shared<Model>(std::move(m));
  owned->set_parameters_require_grad(false);
  return [owned, bf16](const torch::Tensor& x) {
    bulwark::model::EvalMode eval(*owned);
    return bf16 ? owned->logits(x.to(torch::kBFloat16)).to(torch::kFloat) : owned->logits(x);
  };
}

// A clone whose parameters are converted in place (the module keeps its tensors, so TorchScript sees them).
Model converted(const Model& m, const std::function<torch::Tensor(const torch::Tensor&)>& to) {
  Model c = m.clone();
  torch::NoGradGuard no_grad;
  for (auto p : c.parameters()) p.set_data(to(p));
  return c;
}

// A TorchScript executor setting (process-wide). A method's executor keeps the plan it first
// built, so the model is loaded afresh and the settings are on whenever this variant runs.
Variant executor_variant(const std::string& path, bool fuse) {
  Variant v{fuse ? "TE fuser" : "optimizing executor", owning_logits(Model::load(path))};
  auto saved = std::make_shared<std::array<bool, 3>>();
  v.enter = [saved, fuse] {
    *saved = {torch::jit::getGraphExecutorOptimize(), torch::jit::canFuseOnCPU(), torch::jit::tensorExprFuserEnabled()};
    torch::jit::setGraphExecutorOptimize(true);
    torch::jit::overrideCanFuseOnCPU(fuse);
    torch::jit::setTensorExprFuserEnabled(fuse);
  };
  v.leave = [saved] {
    torch::jit::setGraphExecutorOptimize((*saved)[0]);
    torch::jit::overrideCanFuseOnCPU((*saved)[1]);
    torch::jit::setTensorExprFuserEnabled((*saved)[2]);
  };
  v.warmups = 3;  // the profiling executor profiles a run, then optimizes, per input shape
  return v;
}

// Every variant but the executor ones: the untouched graph (the reference) first, then what
// attack::logits_of runs today (the rewritten graph, batch 256), then one lever more per row.
std::vector<Variant> variants(const Model& m) {
  std::vector<Variant> vs;
  Model untouched = m;  // shares the module; runs its own forward (Model::use_forward_graph)
  untouched.use_forward_graph(false);
  vs.push_back({"untouched graph", owning_logits(untouched)});
  for (int64_t b : {256, 32, 64, 128, 1000}) {
    vs.push_back({b == 256 ? "rewritten (default)" : "rewritten, batch " + std::to_string(b), attack::logits_of(m), b});
  }
  Variant cl{"channels_last", owning_logits(converted(m, [](const torch::Tensor& p) {
               return p.dim() == 4 ? p.contiguous(at::MemoryFormat::ChannelsLast) : p;
             }))};
  cl.channels_last = true;
  vs.push_back(cl);
  Variant no_dnn{"oneDNN off", attack::logits_of(m)};
  const bool dnn_was = at::globalContext().userEnabledMkldnn();
  no_dnn.enter = [] { at::globalContext().setUserEnabledMkldnn(false); };
  no_dnn.leave = [dnn_was] { at::globalContext().setUserEnabledMkldnn(dnn_was); };
  vs.push_back(no_dnn);
  Variant autocast{"bf16 autocast", attack::logits_of(m)};
  const bool ac_was = at::autocast::is_cpu_enabled();
  const auto ac_dtype = at::autocast::get_autocast_cpu_dtype();
  autocast.enter = [] {
    at::autocast::set_cpu_enabled(true);
    at::autocast::set_autocast_cpu_dtype(at::kBFloat16);
  };
  autocast.leave = [ac_was, ac_dtype] {
    at::autocast::set_cpu_enabled(ac_was);
    at::autocast::set_autocast_cpu_dtype(ac_dtype);
    at::autocast::clear_cache();
  };
  vs.push_back(autocast);
  vs.push_back({"bf16 weights + input",
                owning_logits(converted(m, [](const torch::Tensor& p) { return p.to(torch::kBFloat16); }), true)});
  return vs;
}

torch::Tensor input_for(const Variant& v, const torch::Tensor& x) {
  return v.channels_last ? x.contiguous(at::MemoryFormat::ChannelsLast) : x;
}

torch::Tensor run_pgd(const Variant& v, const torch::Tensor& x, const torch::Tensor& y, int64_t steps) {
  attack::Pgd pgd(attack::PgdOptions(0.1).steps(steps).early_stop(false).batch_size(v.batch).seed(0));
  return pgd.perturb(v.f, x, y);
}

// Median seconds over reps, robust accuracy under the fp32 model `judge`, and the largest pixel
// difference from the reference's adversarial points; returns this variant's points (undefined on error).
torch::Tensor time_variant(Variant& v, const Model& judge, const torch::Tensor& x, const torch::Tensor& y,
                           int64_t steps, int reps, const torch::Tensor& reference) {
  const auto xv = input_for(v, x);
  std::vector<double> times;
  torch::Tensor adv;
  try {
    Switched on(v);
    for (int w = 0; w < v.warmups; ++w) (void)run_pgd(v, xv, y, std::min<int64_t>(steps, 2));
    for (int r = 0; r < reps; ++r) {
      const auto t0 = Clock::now();
      adv = run_pgd(v, xv, y, steps);
      times.push_back(since(t0));
    }
  } catch (const std::exception& e) {
    const std::string what = e.what();
    v.error = what.substr(0, what.find('\n'));
    std::fprintf(stderr, "  %-28s failed: %s\n", v.name.c_str(), v.error.c_str());
    return {};
  }
  v.seconds = median(times);
  v.robust_accuracy = judge.predict_logits(adv.contiguous()).argmax(1).eq(y).to(torch::kFloat).mean().item<double>();
  v.max_abs_diff = reference.defined() ? (adv - reference).abs().max().item<double>() : 0.0;
  std::fprintf(stderr, "  %-28s %8.2fs\n", v.name.c_str(), v.seconds);
  return adv;
}

// ---- 4. per-op profile ------------------------------------------------------------------------

void print_op_profile(const Variant& v, const torch::Tensor& x, const torch::Tensor& y, int calls = 5) {
  const int64_t b = std::min(v.batch, x.size(0));
  const auto xb = input_for(v, x.narrow(0, 0, b)), yb = y.narrow(0, 0, b);
  const attack::ChunkLoss ce = [&](const torch::Tensor& z, int64_t s, int64_t len) {
    return attack::ce_loss(z, yb.narrow(0, s, len));
  };
  std::vector<Range> ranges;
  {
    Switched on(v);
    (void)attack::input_gradient(v.f, xb, ce, b);  // warm
    ranges = profile_ranges(false, [&] {
      for (int i = 0; i < calls; ++i) (void)attack::input_gradient(v.f, xb, ce, b);
    });
  }
  char title[200];
  std::snprintf(title, sizeof title, "per-op self time, %d x input_gradient at batch %lld, %s", calls,
                static_cast<long long>(b), v.name.c_str());
  bulwark::bench::print_self_time(ranges, title);
}

// What the fuser made of the forward graph: its fusion groups, or why there are none.
std::string fusion_summary(const Variant& v, const torch::Tensor& x) {
  if (!v.error.empty()) return "did not run (" + v.error + ")";
  Switched on(v);
  (void)v.f(x.detach().requires_grad_(true));
  const auto g = torch::jit::lastExecutedOptimizedGraph();
  const std::string text = g ? g->toString() : "";
  auto count = [&](const std::string& what) {
    int c = 0;
    for (auto at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++c;
    return std::to_string(c);
  };
  return count("= prim::TensorExprGroup_") + " TensorExprGroup, " + count("= prim::DifferentiableGraph_") +
         " DifferentiableGraph in the optimized forward graph";
}

}  // namespace

int main(int argc, char** argv) try {
  if (argc < 2 || argc > 5) {
    std::fprintf(stderr, "usage: attack_step MODEL [n=1000] [steps=20] [reps=3]\n");
    return 2;
  }
  const std::string path = argv[1];
  const int64_t n = argc > 2 ? std::atoll(argv[2]) : 1000;
  const int64_t steps = argc > 3 ? std::atoll(argv[3]) : 20;
  const int reps = argc > 4 ? std::atoi(argv[4]) : 3;
  if (n < 1 || steps < 1 || reps < 1) {
    std::fprintf(stderr, "attack_step: n, steps and reps must be >= 1\n");
    return 2;
  }
  torch::set_num_threads(bulwark::hardware_threads());
  Model m = Model::load(path);
  m.set_parameters_require_grad(false);
  const auto test = bulwark::data::load_dataset("fashion-mnist", bulwark::data::Split::kTest).head(n);
  const auto x = test.inputs(), y = test.targets();

  // 1. Machine peak.
  const std::string capability = cpu_capability();
  const double peak = gemm_gflops(torch::kFloat, 2048), peak_bf16 = gemm_gflops(torch::kBFloat16, 2048);
  std::printf("attack_step: %s, %lld test images, pgd-%lld linf eps 0.1 without early stop, seed 0, median of %d\n",
              path.c_str(), static_cast<long long>(n), static_cast<long long>(steps), reps);
  std::printf("machine: ATen cpu capability %s (cpu flags: %s), %d threads, mkldnn %s, %s\n", capability.c_str(),
              cpu_flags().c_str(), torch::get_num_threads(), at::hasMKLDNN() ? "available" : "absent",
              bulwark::loaded_blas().c_str());
  std::printf("  fp32 GEMM peak (2048^3)    %8.1f GFLOP/s\n", peak);
  std::printf("  bf16 GEMM peak (2048^3)    %8.1f GFLOP/s\n", peak_bf16);

  // 2. FLOPs per image-step.
  std::string why;
  const double fwd = forward_flops_per_image(m, x.narrow(0, 0, std::min<int64_t>(16, n)), why);
  const double step_flops = 2 * fwd;
  std::printf("  forward per image          %8.2f MFLOP%s\n", fwd / 1e6,
              why.empty() ? "" : ("  (" + why + ")").c_str());
  std::printf("  step (fwd + input grad)    %8.2f MFLOP per image\n", step_flops / 1e6);

  // 3. The variants; the executor ones last, as their switches are process-wide.
  auto vs = variants(m);
  std::string autocast_dtype;  // does autocast reach ops run by the TorchScript interpreter?
  for (const auto& v : vs) {
    if (v.name != "bf16 autocast") continue;
    torch::NoGradGuard no_grad;
    Switched on(v);
    autocast_dtype = c10::toString(v.f(x.narrow(0, 0, 1)).scalar_type());
  }
  std::fprintf(stderr, "timing %zu variants (%d reps each)\n", vs.size() + 2, reps);
  const auto reference = time_variant(vs[0], m, x, y, steps, reps, torch::Tensor());
  if (!reference.defined()) throw std::runtime_error("the untouched graph's step failed: " + vs[0].error);
  for (size_t i = 1; i < vs.size(); ++i) (void)time_variant(vs[i], m, x, y, steps, reps, reference);
  print_op_profile(vs[0], x, y);  // 4a. before the executor switches have ever been on
  print_op_profile(vs[1], x, y);
  for (bool fuse : {false, true}) {
    vs.push_back(executor_variant(path, fuse));
    (void)time_variant(vs.back(), m, x, y, steps, reps, reference);
  }
  const std::string fusion = fusion_summary(vs.back(), x.narrow(0, 0, std::min<int64_t>(n, 256)));

  const double work = static_cast<double>(n * steps);
  const double ref_acc = vs[0].robust_accuracy;
  // batch: images per forward, min(B, n).
  std::printf("  graph rewrites in the model's forward: %d\n", m.forward_graph_rewrites());
  std::printf("\n%-22s %6s %9s %6s %12s %9s %7s %9s %7s %10s\n", "variant", "batch", "seconds", "ratio", "img-steps/s",
              "GFLOP/s", "%peak", "robust", "d(pt)", "max|dadv|");
  const Variant* fastest = &vs[0];
  nlohmann::json rows = nlohmann::json::array();
  for (const auto& v : vs) {
    if (!v.error.empty()) {
      std::printf("%-22s %6lld   failed: %s\n", v.name.c_str(), static_cast<long long>(std::min(v.batch, n)),
                  v.error.c_str());
      rows.push_back({{"name", v.name}, {"batch", v.batch}, {"error", v.error}});
      continue;
    }
    const double gflops = step_flops * work / v.seconds / 1e9;
    const double dpt = 100 * (v.robust_accuracy - ref_acc);
    std::printf("%-22s %6lld %9.3f %6.3f %12.0f %9.2f %6.1f%% %8.1f%% %+7.1f %10.2e\n", v.name.c_str(),
                static_cast<long long>(std::min(v.batch, n)), v.seconds, v.seconds / vs[0].seconds, work / v.seconds,
                gflops, 100 * gflops / peak, 100 * v.robust_accuracy, dpt, v.max_abs_diff);
    if (std::abs(dpt) <= 0.3 && v.seconds < fastest->seconds) fastest = &v;
    rows.push_back({{"name", v.name},
                    {"batch", v.batch},
                    {"seconds", v.seconds},
                    {"ratio", v.seconds / vs[0].seconds},
                    {"img_steps_per_s", work / v.seconds},
                    {"gflops", gflops},
                    {"peak_fraction", gflops / peak},
                    {"robust_accuracy", v.robust_accuracy},
                    {"max_abs_diff", v.max_abs_diff}});
  }
  std::printf("checks:\n");
  for (const auto& v : vs) {
    if (v.name != "channels_last" || !v.error.empty()) continue;
    std::printf("  channels_last same as the reference within 1e-5: %s\n", v.max_abs_diff <= 1e-5 ? "yes" : "NO");
  }
  std::printf("  bf16 autocast through the TorchScript interpreter: logits %s, %s\n", autocast_dtype.c_str(),
              autocast_dtype == "BFloat16" ? "took effect" : "did NOT take effect");
  std::printf("  TE fuser: %s\n", fusion.c_str());
  std::printf("  fastest with |d(pt)| <= 0.3: %s\n", fastest->name.c_str());
  if (fastest != &vs[0]) print_op_profile(*fastest, x, y);  // 4b.

  const nlohmann::json out = {{"bench", "attack_step"},
                              {"model", path},
                              {"n", n},
                              {"steps", steps},
                              {"reps", reps},
                              {"seed", 0},
                              {"cpu_capability", capability},
                              {"threads", torch::get_num_threads()},
                              {"mkldnn", at::hasMKLDNN()},
                              {"fp32_peak_gflops", peak},
                              {"bf16_peak_gflops", peak_bf16},
                              {"forward_mflop_per_image", fwd / 1e6},
                              {"step_mflop_per_image", step_flops / 1e6},
                              {"autocast_logits_dtype", autocast_dtype},
                              {"te_fuser", fusion},
                              {"graph_rewrites", m.forward_graph_rewrites()},
                              {"fastest", fastest->name},
                              {"variants", rows}};
  std::printf("%s\n", out.dump().c_str());
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "attack_step: %s\n", e.what());
  return 1;
}
