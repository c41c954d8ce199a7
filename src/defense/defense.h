// defense — hardening: adversarial-training objectives (PGD-AT, TRADES, Fast-AT) on train::fit,
// the harden driver (robust checkpoint selection, overfitting guard). Feature squeezing lives in
// attack/squeeze.h (the detectors use it too).
// Depends on attack, train, model, data, core.
#pragma once

#include "defense/harden.h"
#include "defense/objectives.h"

