// train — the training loop with pluggable objectives, and clean evaluation.
// Depends on model, data, core.
#pragma once

#include "train/evaluate.h"
#include "train/options.h"
#include "train/trainer.h"
