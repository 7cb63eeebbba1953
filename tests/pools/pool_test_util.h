// Shared pieces of the pools tests: a fault-injecting system-call table and pool builders.
#pragma once

#include <unistd.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>

#include "gtest/gtest.h"
#include "pools/mempool.h"
#include "pools/sys.h"
#include "tests/common/hugepages.h"

namespace dmashim::testing {

// The real system calls, except mmap, which can be told to fail. Tests reset it in SetUp().
struct Faults {
  std::atomic<bool> fail_mmap{false};  // every mmap fails with `err`
  std::atomic<long> budget{-1};        // mmaps still allowed to succeed; -1 = unlimited
  std::atomic<int> err{ENOMEM};
  std::atomic<long> mmap_calls{0};
  std::atomic<long> mmap_failed{0};
  std::atomic<int> mmap_delay_us{0};  // each mmap sleeps this long first (a slow source)
  void Reset();
};
Faults& TheFaults();
const SysCalls* FaultySysCalls();

// A 2 MiB huge-page mempool over the fault-injecting table; fails the test when Create fails.
std::unique_ptr<Mempool> MakePool(MempoolOptions o, const SysCalls* sys = FaultySysCalls());
MempoolOptions HugeOptions(const char* name, size_t reserve, Mode mode);
// A fail-fast pool of `reserve` 2 MiB elements zeroed per `zero`, filled: nullptr (the test failed)
// when it cannot be created or filled.
std::unique_ptr<Mempool> FilledPool(const char* name, size_t reserve, ZeroMode zero);

// Fills `p` (`len` bytes) with a pattern derived from `seed` / checks it.
void FillPattern(void* p, size_t len, uint64_t seed);
bool HasPattern(const void* p, size_t len, uint64_t seed);
// True when every byte of [p, p+len) is zero.
bool AllZero(const void* p, size_t len);

// Polls `pred` every millisecond for up to `ms`; returns its last value.
template <typename Pred>
bool WaitFor(Pred pred, int ms) {
  for (int i = 0; i < ms; ++i) {
    if (pred()) return true;
    usleep(1000);
  }
  return pred();
}

// Base fixture: needs `kPages` free huge pages, resets fault injection.
class HugePoolTest : public ::testing::Test {
 protected:
  static constexpr long kPages = 48;
  void SetUp() override {
    TheFaults().Reset();
    DMASHIM_REQUIRE_FREE_HUGE_PAGES(kPages);
  }
  void TearDown() override { TheFaults().Reset(); }
};

}  // namespace dmashim::testing
