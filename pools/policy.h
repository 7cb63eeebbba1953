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

// The clock of a wait in block or timeout mode, shared by the pools' waits and the shim's guarded
// calls: the deadline (none in block mode) and the interval between retries of the source, which
// starts at `retry` and doubles up to `retry_max` (memory other processes free sends no wake-up).
class WaitRounds {
 public:
  WaitRounds(const WaitPolicy& policy, uint64_t start_ns, absl::Duration retry,
             absl::Duration retry_max)
      : deadline_ns_(policy.mode == Mode::kTimeout
                         ? static_cast<int64_t>(start_ns) + absl::ToInt64Nanoseconds(policy.timeout)
                         : -1),
        retry_ns_(absl::ToInt64Nanoseconds(retry)),
        retry_max_ns_(absl::ToInt64Nanoseconds(retry_max)) {}

  // The current interval between retries of the source.
  int64_t retry_ns() const { return retry_ns_; }
  // Doubles the interval, up to retry_max.
  void BackOff() { retry_ns_ = retry_ns_ * 2 < retry_max_ns_ ? retry_ns_ * 2 : retry_max_ns_; }
  bool Expired(int64_t now_ns) const { return deadline_ns_ >= 0 && now_ns >= deadline_ns_; }
  // `sleep_ns`, cut to what is left before the deadline (never below 0).
  int64_t Cap(int64_t sleep_ns, int64_t now_ns) const {
    if (deadline_ns_ >= 0 && deadline_ns_ - now_ns < sleep_ns) sleep_ns = deadline_ns_ - now_ns;
    return sleep_ns > 0 ? sleep_ns : 0;
  }

 private:
  int64_t deadline_ns_;  // -1: none
  int64_t retry_ns_;
  int64_t retry_max_ns_;
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
