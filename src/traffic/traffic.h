// traffic — the load generator that drives the closed-loop experiment (`bulwark traffic`): replays
// labelled test images to a KServe V2 endpoint at a set rate and benign/attacked mix, in timed
// phases (benign; fgsm/pgd crafted against a local copy of a model; square against the live
// endpoint), posts the true labels as feedback and writes per-second accuracy and latency as JSON
// lines. Depends on attack, model, data, core and cpp-httplib (hidden in client.cpp).
#pragma once

#include "traffic/client.h"
#include "traffic/options.h"
#include "traffic/phases.h"
#include "traffic/runner.h"
#include "traffic/square_attacker.h"
#include "traffic/stats.h"
#include "traffic/workload.h"
