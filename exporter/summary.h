// Human-readable tables of what the pools did, from stats-segment snapshots: the exit summary of
// `dmashim run --summary` and the body of `dmashim stat`.
#pragma once

#include <string>
#include <vector>

#include "exporter/segment_reader.h"

namespace dmashim {

// Reads every segment in `run_dir` (errors are skipped). Sorted by pid.
std::vector<Snapshot> ReadAllSegments(const std::string& run_dir);

// One block per process: a header line, then one row per pool with allocations by result,
// failures by reason, time blocked, longest wait, reserve level / target, in use and high-water.
std::string FormatSummary(const std::vector<Snapshot>& snapshots);

// The run directory readers use: DMASHIM_RUN_DIR, else the configuration's run_dir, else
// /run/dmashim for root and $XDG_RUNTIME_DIR/dmashim for others (as the shim decides).
std::string ResolveRunDir(const std::string& configured);

}  // namespace dmashim
