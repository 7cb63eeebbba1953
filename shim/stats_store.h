// Where the shim's statistics live: the process's stats segment when one could be created (see
// stats_segment.h), else records in the shim's own memory, so counting never depends on the run
// directory being writable.
#pragma once

#include "pools/stats.h"
#include "shim/config.h"
#include "shim/stats_segment.h"

namespace dmashim {

void StatsStoreOpen(const Config& config, int config_errors);
// A record for a new pool, or nullptr when none is left.
PoolStats* StatsStoreAddPool(const char* name, PoolKind kind);
// A shared overflow record for pools beyond capacity.
PoolStats* StatsStoreFallback();
void StatsStoreCountPassthrough(PassCall call);
// family: 0 mmap, 1 shm, 2 mlock, 3 cuda, 4 ibverbs; state: 0 off, 1 firing, 2 not firing.
void StatsStoreHookState(int family, int state);
void StatsStoreMarkExited();
// The segment, for call sites and control requests; nullptr when none could be created.
StatsSegment* StatsStoreSegment();
// After fork, in the child: a segment of its own, the pools' records re-pointed to it.
void StatsStoreForkChild();

}  // namespace dmashim
