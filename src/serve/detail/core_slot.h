// serve/detail/core_slot.h — what an InferenceCore keeps per served model (a slot) and what a
// load prepares before it commits; shared by core.cpp (the request path) and core_models.cpp (the
// model lifecycle). Private to serve.
#pragma once

#include <memory>
#include <string>

#include "detect/calibration.h"
#include "detect/monitor.h"
#include "model/model.h"
#include "serve/batcher.h"
#include "serve/core.h"

namespace bulwark::serve {

struct InferenceCore::Slot {
  std::string name, version;
  ResolvedModel source;  // where it came from: reference, verified path, registry version
  std::string sha256;    // of the model file as loaded: a reload of the same bytes keeps the slot
  model::Model model;
  std::shared_ptr<const detect::DetectorSet> detectors;  // null: detection off
  std::unique_ptr<DynamicBatcher> batcher;               // declared last: destroyed (drained) first
};

struct InferenceCore::Prepared {
  std::string name, reference;
  std::shared_ptr<Slot> slot;  // null: unchanged, keep what serves
  std::shared_ptr<detect::StreamMonitor> monitor;
};

}  // namespace bulwark::serve
