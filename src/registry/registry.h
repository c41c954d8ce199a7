// registry/registry.h — the registry module's public face: the store (versions, stages,
// verification), signing (OMS bundles, keys, trust list), the audit log and run records.
#pragma once

#include "registry/audit.h"
#include "registry/db.h"
#include "registry/objects.h"
#include "registry/runs.h"
#include "registry/signing.h"
#include "registry/store.h"
