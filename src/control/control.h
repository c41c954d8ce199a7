// control/control.h — the closed loop's public face: policy, gate, job runners, controller.
#pragma once

#include "control/controller.h"
#include "control/gate.h"
#include "control/policy.h"
#include "control/runner.h"
