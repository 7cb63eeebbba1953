// Fork storms for the test programs (tests/cuda, tests/ibverbs): forking while other threads are
// inside the shim, with each child bounded in time — a child that deadlocked on a lock inherited
// from another thread must count as hung, not hang the test.
#pragma once

#include <errno.h>
#include <signal.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <thread>
#include <vector>

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

// Two threads each run `thread_body(stop, rounds)`, which loops until `stop` is set and bumps
// `rounds` once per round. When `warm_rounds` rounds are done, forks up to `forks` children one at
// a time, each exiting 0 when `child()` returns true and bounded to 5 s, and stops at the first
// hung child. Prints "forks=N hung=H failed=F".
template <typename ThreadBody, typename Child>
int ForkStorm(int forks, long warm_rounds, ThreadBody thread_body, Child child) {
  std::atomic<bool> stop{false};
  std::atomic<long> rounds{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 2; ++t) threads.emplace_back([&] { thread_body(stop, rounds); });
  while (rounds.load() < warm_rounds) usleep(1000);
  int done = 0, hung = 0, failed = 0;
  for (; done < forks && hung == 0; ++done) {
    const pid_t pid = fork();
    if (pid < 0) break;
    if (pid == 0) _exit(child() ? 0 : 1);
    const ChildEnd end = WaitChildOrKill(pid, 5000);
    hung += end == ChildEnd::kHung;
    failed += end == ChildEnd::kFailed;
  }
  stop.store(true);
  for (auto& t : threads) t.join();
  printf("forks=%d hung=%d failed=%d\n", done, hung, failed);
  return 0;
}

}  // namespace dmashim::testing
