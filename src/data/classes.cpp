#include "data/classes.h"

#include <algorithm>

#include "core/error.h"

namespace bulwark::data {

bool numbered_classes(const std::vector<std::string>& names) {
  for (size_t i = 0; i < names.size(); ++i) {
    if (names[i] != std::to_string(i)) return false;
  }
  return true;
}

void check_classes(const Dataset& d, const std::vector<std::string>& model_classes) {
  const auto k = static_cast<int64_t>(model_classes.size());
  if (d.size() > 0) {
    const int64_t top = d.labels.max().item<int64_t>();
    if (top >= k) {
      throw invalid_argument("--data " + d.name + ": label " + std::to_string(top) + " is out of range for the model's " +
                             std::to_string(k) + " classes");
    }
  }
  if (numbered_classes(d.class_names) || numbered_classes(model_classes)) return;
  for (size_t i = 0; i < std::min(d.class_names.size(), model_classes.size()); ++i) {
    if (d.class_names[i] != model_classes[i]) {
      throw invalid_argument("--data " + d.name + ": class " + std::to_string(i) + " is '" + d.class_names[i] +
                             "' but the model's class " + std::to_string(i) + " is '" + model_classes[i] +
                             "' (the folder's class folders must be the model's classes, in the same order)");
    }
  }
}

}  // namespace bulwark::data
