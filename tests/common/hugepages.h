// Test helpers for real 2 MiB huge pages (library dmashim_testing, header tests/common/hugepages.h).
//
// Reserving pages. A fixture that needs huge pages states how many free ones it needs:
//
//   void SetUp() override { DMASHIM_REQUIRE_FREE_HUGE_PAGES(64); }
//
// The macro makes sure at least that many 2 MiB pages are free on the node, raising
// /proc/sys/vm/nr_hugepages if it must (root only). The process takes back what it added when it
// exits, never going below the value it found before its first raise. When the
// pages cannot be had, the test is skipped with a message that says why and how to fix it — except
// under the environment variable CI=true, where it is a test failure (a CI machine without huge
// pages is broken, not exempt). Use it in SetUp() or directly in a TEST body: like GTEST_SKIP it
// returns from the enclosing function.
//
// Exhausting pages. HugePageHog forks a child that maps every free 2 MiB huge page (or a given
// number), faults each in with MADV_POPULATE_WRITE (so a missing page is an error, never a SIGBUS),
// reports through a pipe how many it holds, and keeps them until Release() is called, the hog is
// destroyed, the parent dies, or its safety delay expires — whichever comes first.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <string>

#include "gtest/gtest.h"

namespace dmashim::testing {

inline constexpr size_t kHugePage2M = size_t{2} << 20;

// 2 MiB huge pages free on the node now / configured (nr_hugepages); -1 if sysfs is unreadable.
long FreeHugePages2M();
long TotalHugePages2M();

// True when the environment variable CI is "true" (or "1").
bool InCi();

struct HugePageCheck {
  bool ok = false;
  std::string message;  // why the pages are not there and how to get them; empty when ok
};

// Makes at least `count` 2 MiB huge pages free, raising nr_hugepages when it must (root only; the
// old value is restored at process exit). Never skips or fails by itself: the result says whether
// it worked. Safe to call repeatedly; only the process that raised the value restores it.
HugePageCheck EnsureFreeHugePages(long count);

// Takes back what this process added to nr_hugepages, but never below the value it found before
// its first raise (no-op when it raised nothing). Called automatically at exit; exposed for tests
// that want to restore earlier.
void RestoreHugePages();

// Forks a child that takes free 2 MiB huge pages and holds them.
class HugePageHog {
 public:
  // Starts the child and waits until it has taken its pages. `max_pages` < 0: every free page;
  // otherwise at most that many. `hold_seconds`: the child releases everything on its own after this
  // long (a safety net so a failing test cannot leave the node without huge pages).
  explicit HugePageHog(long max_pages = -1, int hold_seconds = 30);
  // Releases the pages (if still held) and reaps the child.
  ~HugePageHog();

  HugePageHog(const HugePageHog&) = delete;
  HugePageHog& operator=(const HugePageHog&) = delete;

  // False when fork or the pipe failed, or the child died before reporting; see error().
  bool ok() const { return ok_; }
  const std::string& error() const { return error_; }
  // Pages the child holds (as it reported them).
  long pages() const { return pages_; }
  pid_t pid() const { return pid_; }

  // Tells the child to unmap its pages, and waits until it exited (so the pages are free again when
  // this returns). Returns true when the child exited normally. Idempotent.
  bool Release();

 private:
  pid_t pid_ = -1;
  int to_child_ = -1;  // write end: closing it (EOF) tells the child to release
  bool ok_ = false;
  bool released_ = false;
  bool exited_ok_ = false;
  long pages_ = 0;
  std::string error_;
};

}  // namespace dmashim::testing

// Skips (or, under CI=true, fails) the current test unless `count` 2 MiB huge pages can be made
// free. Returns from the enclosing void function when it does.
#define DMASHIM_REQUIRE_FREE_HUGE_PAGES(count)                                               \
  do {                                                                                       \
    const ::dmashim::testing::HugePageCheck dmashim_hp_check_ =                              \
        ::dmashim::testing::EnsureFreeHugePages(count);                                      \
    if (!dmashim_hp_check_.ok) {                                                             \
      if (::dmashim::testing::InCi()) {                                                      \
        GTEST_FAIL() << "CI=true and huge pages are missing: " << dmashim_hp_check_.message; \
      } else {                                                                               \
        GTEST_SKIP() << dmashim_hp_check_.message;                                           \
      }                                                                                      \
    }                                                                                        \
  } while (0)
