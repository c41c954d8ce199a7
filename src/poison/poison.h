// poison — is there a backdoor in a training set? The scan (spectral signatures and activation
// clustering on a trained model's penultimate features, oriented by pixel-space neighbours), the
// retraining without its suspects, and BadNets poisoning to measure both by. Depends on train,
// model, data.
#pragma once

#include "poison/badnets.h"
#include "poison/cluster.h"
#include "poison/digest.h"
#include "poison/neighbours.h"
#include "poison/retrain.h"
#include "poison/scan.h"
