// Pinned memory as an unprivileged user (issue 3, tests 3). Root has CAP_IPC_LOCK and bypasses
// RLIMIT_MEMLOCK, so the program runs as nobody with an 8 MiB limit. The shim's pinned pool holds
// 4 MiB of that budget from start-up; an mlock that would exceed the limit gets the pool's budget
// released and is retried, and one that cannot fit at all fails with the kernel's errno, counted.
#include <sys/stat.h>
#include <unistd.h>

#include "gtest/gtest.h"
#include "tests/shim/harness.h"

namespace dmashim::testing {
namespace {

class PinnedTest : public ::testing::Test {
 protected:
  RunResult Run(bool shim, std::vector<std::string> sizes) {
    std::vector<std::string> argv = {ProbePath(), "mlock"};
    argv.insert(argv.end(), sizes.begin(), sizes.end());
    return RunProgram(PinnedAsNobody(dir_, std::move(argv), shim));
  }

  const PoolStats* Pool() {
    snaps_ = Segments(dir_.path() + "/run");
    if (snaps_.size() != 1 || snaps_[0].pools.size() < 2) return nullptr;
    return snaps_[0].pools[1];
  }

  TempDir dir_;
  std::vector<Snapshot> snaps_;
};

TEST_F(PinnedTest, ReleaseAndRetryFitsAnMlockTheHeldBudgetWouldBlock) {
  // 6 MiB fits the 8 MiB limit on its own, not beside the pool's 4 MiB.
  RunResult plain = Run(false, {"6291456"});
  EXPECT_EQ(plain.kv["mlock0"], "0") << plain.err;
  RunResult r = Run(true, {"6291456"});
  EXPECT_EQ(r.kv["mlock0"], "0") << r.err;
  const PoolStats* p = Pool();
  ASSERT_NE(p, nullptr);
  EXPECT_STREQ(p->name, "pinned");
  EXPECT_EQ(Get(p->alloc_reserve), 1u);  // served by releasing the reserve
  EXPECT_GE(Get(p->source_releases), 2u);  // at least 2 of the 1 MiB elements went back
  EXPECT_EQ(Get(p->fail_fast), 0u);
}

TEST_F(PinnedTest, AnMlockBeyondTheLimitFailsWithTheKernelsErrnoAndIsCounted) {
  RunResult plain = Run(false, {"6291456", "4194304"});
  RunResult r = Run(true, {"6291456", "4194304"});
  EXPECT_EQ(plain.kv["mlock1"], "ENOMEM");
  EXPECT_EQ(r.kv, plain.kv);
  const PoolStats* p = Pool();
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(Get(p->fail_fast), 1u);
  EXPECT_EQ(Get(p->alloc_source), 0u);
}

}  // namespace
}  // namespace dmashim::testing
