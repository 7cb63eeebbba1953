// Waiting for a forked test child with a bound, for the fork-storm programs (tests/cuda,
// tests/ibverbs): a child that deadlocked on a lock inherited from another thread must count as
// hung, not hang the test.
#pragma once

#include <errno.h>
#include <signal.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

namespace dmashim::testing {

enum class ChildEnd { kOk, kFailed, kHung };

// Waits up to `ms` milliseconds for `pid`; one still running then is killed (SIGKILL) and reaped.
inline ChildEnd WaitChildOrKill(pid_t pid, int ms) {
  int status = 0;
  pid_t r;
  for (int waited = 0; (r = waitpid(pid, &status, WNOHANG)) == 0 && waited < ms; ++waited) {
    usleep(1000);
  }
  if (r == 0) {
    kill(pid, SIGKILL);
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    return ChildEnd::kHung;
  }
  if (r < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) return ChildEnd::kFailed;
  return ChildEnd::kOk;
}

}  // namespace dmashim::testing
