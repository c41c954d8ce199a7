// report/limits.h — caps on every file a report reads, so a wrong path (a model, a dataset) fails
// fast with a message instead of filling memory.
#pragma once

#include <cstdint>

namespace bulwark::report {

constexpr int64_t kMaxInputLines = 1000000;             // per JSON-lines file
constexpr int64_t kMaxInputBytes = int64_t{256} << 20;  // 256 MiB, per file

}  // namespace bulwark::report
