// Models that misbehave on purpose, for the fault tests: TorchScript modules defined from source
// (torch::jit::Module::define), saved with a Bulwark spec and served like any model file.
//
// The gated model calls the op bulwark_test::gate, registered by this test binary: while a test
// holds the gate closed every forward pass that reaches it blocks — a hung model, on demand.
#pragma once

#include <chrono>
#include <string>

#include "test_util.h"

namespace bulwark::testing {

// Closes the gate for its lifetime (opens it on destruction, or earlier with open()).
class ClosedGate {
 public:
  ClosedGate();
  ~ClosedGate();
  ClosedGate(const ClosedGate&) = delete;
  ClosedGate& operator=(const ClosedGate&) = delete;
  void open();
  // Waits until `n` forward passes are blocked in the gate; false after `timeout`.
  bool wait_for_blocked(int n, std::chrono::milliseconds timeout) const;
  // Waits until no forward pass is blocked in the gate; false after `timeout`.
  bool wait_for_none_blocked(std::chrono::milliseconds timeout) const;
};

// 1x28x28 inputs in [0, 1], 10 classes; each returns the file's path.
std::string write_gated_model(const TempDir& dir, const std::string& name);   // passes the gate first
std::string write_short_model(const TempDir& dir, const std::string& name);   // one row fewer than a batch of 2+
std::string write_narrow_model(const TempDir& dir, const std::string& name);  // 5 logits per row, spec says 10
// Fails inside TorchScript (a LibTorch error carrying the script's source) when the input sums
// to more than 100; all-zero inputs (the server's warm-up) pass.
std::string write_leaky_model(const TempDir& dir, const std::string& name);

}  // namespace bulwark::testing
