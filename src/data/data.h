// data — datasets (IDX: MNIST/Fashion-MNIST, gzip or raw), deterministic splits and batches.
// Depends on core.
#pragma once

#include "data/dataset.h"
#include "data/idx.h"
