// detect — the eyes of the closed loop: per-input attack detectors and their calibration
// (detector.h, calibration.h), offline evaluation against the attack suite and an adaptive
// attacker (evaluate.h), per-client query-similarity detection (stateful.h), per-client model
// extraction detection (extraction.h, with its Shapiro-Wilk test in shapiro_wilk.h), the stream monitor
// (monitor.h, its reference and threshold calibration in cusum.h, monitor_fit.h) and the events it
// raises (events.h).
// Depends on attack (squeezers, attacks for evaluation), model, core.
#pragma once

#include "detect/calibration.h"
#include "detect/cusum.h"
#include "detect/detector.h"
#include "detect/evaluate.h"
#include "detect/events.h"
#include "detect/extraction.h"
#include "detect/monitor.h"
#include "detect/monitor_fit.h"
#include "detect/shapiro_wilk.h"
#include "detect/stateful.h"
