// attack — the threat model, evasion attacks (FGSM, PGD, APGD-CE/DLR/T, Square, BPDA) and the
// robustness evaluation that judges every defense. Depends on model, data (for the CLI), core.
#pragma once

#include "attack/apgd.h"
#include "attack/base.h"
#include "attack/bpda.h"
#include "attack/evaluate.h"
#include "attack/factory.h"
#include "attack/fgsm.h"
#include "attack/losses.h"
#include "attack/pgd.h"
#include "attack/square.h"
#include "attack/squeeze.h"
#include "attack/threat.h"
