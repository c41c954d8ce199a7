// data/classes.h — does a dataset's labelling fit a model's classes? Shared by every command and by
// the loop's jobs, so data that would be scored against the wrong classes is refused everywhere.
#pragma once

#include <string>
#include <vector>

#include "data/dataset.h"

namespace bulwark::data {

// True for the numbered default "0".."K-1" (IDX, .npz, a model imported without names).
bool numbered_classes(const std::vector<std::string>& names);

// Throws invalid_argument when a label is out of range for `model_classes`, or when both name their
// classes and the same index names another class (an image folder missing one class shifts every
// label after it). Numbered classes are compared by count only.
void check_classes(const Dataset& d, const std::vector<std::string>& model_classes);

}  // namespace bulwark::data
