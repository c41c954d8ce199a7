// control/control.h — the closed loop's public face: policy, gate, job runners (Kubernetes
// included), template rendering, controller.
#pragma once

#include "control/controller.h"
#include "control/gate.h"
#include "control/kubernetes.h"
#include "control/manifest.h"
#include "control/policy.h"
#include "control/runner.h"
