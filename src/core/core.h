// core — errors with context, atomic file writes, progress bars, process facts.
// Depends on nothing else in Bulwark.
#pragma once

#include "core/digest.h"
#include "core/error.h"
#include "core/files.h"
#include "core/progress.h"
#include "core/system.h"
