// bench/soak/workspace.cpp — the soak's temp dir (workspace.h): the good model in two byte-different
// variants, the throwing model defined here in TorchScript, the tokens, and the server's flags.
#include "workspace.h"

#include <torch/csrc/jit/frontend/resolver.h>
#include <torch/csrc/jit/frontend/sugared_value.h>
#include <torch/script.h>
#include <unistd.h>

#include <fstream>
#include <memory>
#include <stdexcept>
#include <utility>

#include "core/digest.h"
#include "model/zoo.h"
#include "soak.h"

namespace bulwark::soak {
namespace {

// `torch.*` as the native resolver has it, plus RuntimeError (Python's resolver would supply it).
struct FlakyResolver : torch::jit::Resolver {
  std::shared_ptr<torch::jit::SugaredValue> resolveValue(const std::string& name, torch::jit::GraphFunction&,
                                                         const torch::jit::SourceRange&) override {
    if (name == "torch") return std::make_shared<torch::jit::BuiltinModule>("aten");
    if (name == "RuntimeError") return std::make_shared<torch::jit::ExceptionValue>("builtins.RuntimeError");
    return nullptr;
  }
  torch::jit::TypePtr resolveType(const std::string&, const torch::jit::SourceRange&) override { return nullptr; }
};

// Raises RuntimeError or fails inside LibTorch (a shape error carrying the source) on a tripped
// first or second pixel (above kTrip); otherwise logits. The all-zero warm-up input passes.
bulwark::model::Model flaky_model() {
  torch::jit::Module m("__torch__.Flaky");
  m.define(R"(
def forward(self, x):
    flat = x.reshape(x.size(0), -1)
    if float(flat[0, 0]) > 0.99:
        raise RuntimeError("flaky_secret_marker: tripped at /srv/models/flaky.py line 4")
    if float(flat[0, 1]) > 0.99:
        flaky_secret_weights = torch.zeros(3, 10)
        return torch.mm(flat, flaky_secret_weights)
    return flat[:, 0:10] * 2.0 - 1.0
)",
           std::make_shared<FlakyResolver>());
  return bulwark::model::Model(m, bulwark::model::default_spec(10));
}

}  // namespace

Workspace make_workspace(const std::string& model, uint64_t seed) {
  std::string tmpl = (fs::temp_directory_path() / "bulwark-soak-XXXXXX").string();
  if (!::mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
  Workspace w{tmpl, "soak-infer-" + std::to_string(seed), "soak-admin-" + std::to_string(seed),
              "soak-limited-" + std::to_string(seed)};
  namespace bm = bulwark::model;
  auto a = model == "-" ? bm::create_model("cnn", bm::default_spec(10), seed) : bm::Model::load(model);
  a.save(w.file("good-a.pt"));
  // The same model with other bytes (a swap to identical bytes is no swap): one weight nudged.
  auto b = a.clone();
  {
    torch::NoGradGuard ng;
    b.parameters().back().add_(1e-6);
  }
  b.save(w.file("good-b.pt"));
  fs::copy_file(w.file("good-a.pt"), w.live());
  flaky_model().save(w.file("flaky.pt"));
  std::ofstream(w.file("tokens.yaml")) << "tokens:\n"
                                       << "  - id: soak-client\n    sha256: " << bulwark::sha256_hex(w.infer_token)
                                       << "\n    roles: [infer]\n"
                                       << "  - id: soak-ops\n    sha256: " << bulwark::sha256_hex(w.admin_token)
                                       << "\n    roles: [infer, admin]\n"
                                       << "  - id: soak-limited\n    sha256: " << bulwark::sha256_hex(w.limited_token)
                                       << "\n    roles: [infer]\n    rate_per_s: " << kLimitedRatePerS
                                       << "\n    burst: " << kLimitedRatePerS << "\n";
  return w;
}

std::vector<std::string> server_args(const Workspace& w) {
  auto n = [](int v) { return std::to_string(v); };
  // One LibTorch thread: on 2 cores it serves more than two (docs/BENCHMARKS.md).
  std::vector<std::string> args = {"--json", "--threads", "1", "serve", "--allow-unsigned"};
  const std::vector<std::pair<std::string, std::string>> flags = {
      {"--model", "good=" + w.live()},
      {"--model", "flaky=" + w.file("flaky.pt")},
      {"--model-root", w.dir},
      {"--tokens", w.file("tokens.yaml")},
      {"--http-port", "0"},
      {"--grpc-port", "0"},
      {"--threads", n(kThreads)},
      {"--max-batch", n(kMaxBatch)},
      {"--max-queue", n(kMaxQueue)},
      {"--request-timeout-ms", n(kRequestTimeoutMs)},
      {"--drain-timeout-ms", n(kDrainTimeoutMs)},
      {"--max-body-bytes", n(kMaxBodyBytes)},
      {"--access-log", "/dev/null"},
  };
  for (const auto& [flag, value] : flags) args.insert(args.end(), {flag, value});
  return args;
}

}  // namespace bulwark::soak
