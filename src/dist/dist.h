// dist — data-parallel training's plumbing over c10d ProcessGroupGloo: who the ranks are (from a
// launcher's environment or --dist-* flags) and the collectives fit() needs, each with a timeout
// so a dead or hung peer ends every rank with an error instead of a hang. Depends on core.
#pragma once

#include "dist/config.h"
#include "dist/group.h"
