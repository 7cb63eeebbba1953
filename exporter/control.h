// `dmashim ctl`: steering a running process through the control area of its stats segment (the
// protocol is in shim/stats_segment.h, SegmentControl). The request is applied by the process's own
// maintenance thread; this side only writes it and waits for the answer.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>

#include "absl/time/time.h"

namespace dmashim {

struct CtlOutcome {
  int exit_code = 1;    // 0 done, 1 refused / failed / partial
  std::string message;  // one line (no newline) for the user
};

// Resizes pool `pool` of process `pid` to a reserve of `n` elements. Finds the process's live
// segment in `run_dir`, refuses unless the caller (`caller_euid`) is root or the process's owner,
// verifies the file with the segment reader, maps it MAP_SHARED, claims the control area, and
// waits at most `timeout` for the answer. A partial grow reports how far it got.
CtlOutcome CtlResize(const std::string& run_dir, int32_t pid, const std::string& pool, int64_t n,
                     uid_t caller_euid, absl::Duration timeout = absl::Seconds(5));

}  // namespace dmashim
