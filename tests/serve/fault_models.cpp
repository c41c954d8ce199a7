#include "fault_models.h"

#include <torch/csrc/jit/frontend/resolver.h>
#include <torch/csrc/jit/frontend/sugared_value.h>
#include <torch/script.h>

#include <condition_variable>
#include <mutex>

#include "model/model.h"
#include "model/spec.h"

namespace bulwark::testing {
namespace {

struct Gate {
  std::mutex mu;
  std::condition_variable cv;
  bool closed = false;
  int blocked = 0;
};

Gate& gate() {
  static Gate g;
  return g;
}

at::Tensor gate_op(const at::Tensor& x) {
  auto& g = gate();
  std::unique_lock<std::mutex> lock(g.mu);
  ++g.blocked;
  g.cv.notify_all();
  g.cv.wait(lock, [&] { return !g.closed; });
  --g.blocked;
  g.cv.notify_all();
  return x;
}

// `torch.*` as the native resolver has it, plus `bulwark_test.*` for this binary's op.
struct TestResolver : torch::jit::Resolver {
  std::shared_ptr<torch::jit::SugaredValue> resolveValue(const std::string& name, torch::jit::GraphFunction&,
                                                         const torch::jit::SourceRange&) override {
    if (name == "torch") return std::make_shared<torch::jit::BuiltinModule>("aten");
    if (name == "bulwark_test") return std::make_shared<torch::jit::BuiltinModule>("bulwark_test");
    return nullptr;
  }
  torch::jit::TypePtr resolveType(const std::string&, const torch::jit::SourceRange&) override { return nullptr; }
};

std::string write_scripted(const TempDir& dir, const std::string& name, const std::string& source) {
  torch::jit::Module m("__torch__.Faulty");
  m.define(source, std::make_shared<TestResolver>());
  const auto path = dir.file(name);
  model::Model(m, model::default_spec(10)).save(path);
  return path;
}

}  // namespace

TORCH_LIBRARY(bulwark_test, m) { m.def("gate(Tensor x) -> Tensor", &gate_op); }

ClosedGate::ClosedGate() {
  std::lock_guard<std::mutex> lock(gate().mu);
  gate().closed = true;
}

ClosedGate::~ClosedGate() { open(); }

void ClosedGate::open() {
  std::lock_guard<std::mutex> lock(gate().mu);
  gate().closed = false;
  gate().cv.notify_all();
}

bool ClosedGate::wait_for_blocked(int n, std::chrono::milliseconds timeout) const {
  std::unique_lock<std::mutex> lock(gate().mu);
  return gate().cv.wait_for(lock, timeout, [&] { return gate().blocked >= n; });
}

bool ClosedGate::wait_for_none_blocked(std::chrono::milliseconds timeout) const {
  std::unique_lock<std::mutex> lock(gate().mu);
  return gate().cv.wait_for(lock, timeout, [&] { return gate().blocked == 0; });
}

std::string write_gated_model(const TempDir& dir, const std::string& name) {
  return write_scripted(dir, name, R"(
def forward(self, x):
    y = bulwark_test.gate(x)
    return y.reshape(y.size(0), -1)[:, 0:10] * 2.0 - 1.0
)");
}

std::string write_short_model(const TempDir& dir, const std::string& name) {
  return write_scripted(dir, name, R"(
def forward(self, x):
    n = x.size(0)
    k = n
    if n > 1:
        k = n - 1
    return x.reshape(n, -1)[0:k, 0:10]
)");
}

std::string write_narrow_model(const TempDir& dir, const std::string& name) {
  return write_scripted(dir, name, R"(
def forward(self, x):
    return x.reshape(x.size(0), -1)[:, 0:5]
)");
}

std::string write_leaky_model(const TempDir& dir, const std::string& name) {
  return write_scripted(dir, name, R"(
def forward(self, x):
    flat = x.reshape(x.size(0), -1)
    if float(flat.sum()) > 100.0:
        leaky_internal_weights = torch.zeros(3, 10)
        return torch.mm(flat, leaky_internal_weights)
    return flat[:, 0:10]
)");
}

}  // namespace bulwark::testing
