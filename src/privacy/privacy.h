// privacy — does a model leak who was in its training set? Membership-inference audits: the loss
// threshold baseline (Yeom et al. 2018) and offline LiRA (Carlini et al., S&P 2022) with shadow
// models trained on disjoint data by the same recipe as the target. Depends on train, model, data.
#pragma once

#include "privacy/audit.h"
#include "privacy/membership.h"
#include "privacy/roc.h"
