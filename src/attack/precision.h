// attack/precision.h — the arithmetic of an attack's gradient passes (attack::logits_of).
#pragma once

#include <string>

namespace bulwark::attack {

// kBf16 runs the model under CPU autocast to bfloat16 whenever autograd is recording (the forward
// and input-gradient pass of each step: convolutions and matrix products in bf16, element-wise work
// on half the bytes) and returns fp32 logits. Forward passes without autograd (every verdict: robust
// accuracy, the last iterate's check, Square's queries, the gate) stay fp32, so bf16 can only make
// an attack weaker, never a verdict wrong; bench/attack_throughput measures both. fp32 is the default.
enum class Precision { kFp32, kBf16 };

// "fp32" or "bf16"; anything else throws invalid_argument naming `flag`.
Precision parse_precision(const std::string& s, const char* flag = "--precision");
std::string to_string(Precision p);

}  // namespace bulwark::attack
