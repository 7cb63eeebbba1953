// The wait policy of a pool (DESIGN §4): what an allocation does when the pool's free elements and
// the source are both exhausted.
#pragma once

#include <cstdint>
#include <string>
#include "absl/strings/string_view.h"

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace dmashim {

enum class Mode : uint32_t {
  kBlock = 1,     // wait until an element comes back or the source succeeds; never fails
  kTimeout = 2,   // wait up to WaitPolicy::timeout, then fail with ENOMEM
  kFailFast = 3,  // fail with ENOMEM at once
};

enum class ZeroMode : uint32_t {
  kEager = 1,       // a recycled element is zeroed when it is freed back
  kBackground = 2,  // zeroed ahead of time on the maintenance thread (inline if none is ready)
  kNone = 3,        // not zeroed: explicit opt-in, the caller sees the previous contents
};

struct WaitPolicy {
  Mode mode = Mode::kFailFast;
  absl::Duration timeout = absl::ZeroDuration();  // only for kTimeout
  bool interruptible = false;  // a signal handler run ends the wait with EINTR
};

// Parses "block", "fail-fast" or "timeout:<duration>" (Abseil duration syntax: "50ms", "2s",
// "1.5s"). The error message says what was expected.
absl::StatusOr<WaitPolicy> ParseMode(absl::string_view text);
absl::StatusOr<ZeroMode> ParseZeroMode(absl::string_view text);

// "block", "fail-fast", "timeout:50ms" — the inverse of ParseMode.
std::string FormatMode(const WaitPolicy& policy);
absl::string_view ModeName(Mode mode);
absl::string_view ZeroModeName(ZeroMode zero);

}  // namespace dmashim
