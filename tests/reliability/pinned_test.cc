// Pinned memory as an unprivileged user with a low RLIMIT_MEMLOCK, including mlockall (issue 7,
// item 5). Root has CAP_IPC_LOCK, so rprobe runs as nobody with an 8 MiB limit (this machine's
// hard limit) and a pinned pool holding 4 x 1 MiB of it from start-up. (tests/shim/pinned_test
// covers plain mlock release-and-retry; this file covers mlockall and mlock after it.)
#include <sys/stat.h>
#include <unistd.h>

#include "gtest/gtest.h"
#include "tests/reliability/rutil.h"

namespace dmashim::testing {
namespace {

class PinnedMlockall : public ::testing::Test {
 protected:
  RunResult Run(bool shim) {
    // rprobe mlocks 1 MiB of its own first.
    RunResult r = RunProgram(PinnedAsNobody(dir_, {RprobePath(), "mlockall", "1048576"}, shim));
    snaps_ = Segments(dir_.path() + "/run");
    return r;
  }

  TempDir dir_;
  std::vector<Snapshot> snaps_;
};

// What the shim adds to a process's address space besides the reserve it was told to hold: its
// libraries, heap, stats segment and the maintenance thread's stack. mlockall(MCL_CURRENT) is
// refused when the whole address space exceeds RLIMIT_MEMLOCK (and pins all of it where the
// process may lock), so this is memory the application pays for. The maintenance thread used to
// get glibc's default 8 MiB stack: 10.4 MiB here besides the reserve, now about 2.6 MiB (of which
// about 0.7 MiB anonymous and resident; the rest is the shim's libraries, shared with other processes).
TEST_F(PinnedMlockall, ShimAddressSpaceBesideTheReserveIsSmall) {
  RunResult plain = Run(false);
  ASSERT_EQ(plain.exit_code, 0) << plain.err;
  RunResult r = Run(true);
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  const long reserve_kb = 4 * 1024;
  const long extra_vm_kb = std::stol(r.kv["vm_kb"]) - std::stol(plain.kv["vm_kb"]) - reserve_kb;
  const long extra_rss_kb = std::stol(r.kv["rss_anon_kb"]) - std::stol(plain.kv["rss_anon_kb"]) - reserve_kb;
  EXPECT_LE(extra_vm_kb, 4 * 1024) << "address space the shim adds besides its reserve";
  EXPECT_LE(extra_rss_kb, 1024) << "anonymous resident memory the shim adds besides its reserve "
                                  "(DESIGN §8: at most 1 MiB)";
  printf("shim besides the reserve: %ld KiB of address space, %ld KiB resident\n", extra_vm_kb,
         extra_rss_kb);
}

// mlockall(MCL_CURRENT) is bounded by the whole address space (total_vm), not by what is locked.
// Without the shim rprobe is small enough; under it the shim's own mappings (its libraries, its
// thread's stack, the 4 MiB reserve) are over 8 MiB, so the kernel refuses. The shim must then
// hand back the kernel's own errno, count each failure exactly once, and leave the process whole:
// munlockall works and the app's earlier mlock stays granted.
TEST_F(PinnedMlockall, FailuresCarryTheKernelsErrnoAndAreCountedExactly) {
  RunResult plain = Run(false);
  ASSERT_EQ(plain.exit_code, 0) << plain.err;
  EXPECT_EQ(plain.kv["mlock"], "0");
  EXPECT_EQ(plain.kv["mlockall"], "0") << "rprobe alone fits the limit: vm_kb=" << plain.kv["vm_kb"];

  RunResult r = Run(true);
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_EQ(r.kv["mlock"], "0") << "1 MiB beside the 4 MiB reserve fits 8 MiB";
  EXPECT_EQ(r.kv["munlockall"], "0");
  ASSERT_EQ(snaps_.size(), 1u);
  ASSERT_GE(snaps_[0].pools.size(), 2u);
  const PoolStats* p = snaps_[0].pools[1];
  ASSERT_STREQ(p->name, "pinned");
  int failed = 0;
  for (const char* k : {"mlockall", "mlockall_future"}) {
    const std::string& e = r.kv[k];
    EXPECT_TRUE(e == "0" || e == "ENOMEM") << k << "=" << e;  // the kernel's answer, nothing else
    failed += e != "0";
  }
  if (std::stol(r.kv["vm_kb"]) * 1024 > static_cast<long>(kPinnedMemlockLimit)) {
    EXPECT_EQ(failed, 2) << "total_vm above the limit: the kernel refuses mlockall";
  }
  EXPECT_EQ(Get(p->fail_fast), static_cast<uint64_t>(failed));
  EXPECT_EQ(Failures(p), static_cast<uint64_t>(failed));
  // The reserve was really pinned at start-up, under the limit.
  EXPECT_EQ(Get(p->reserve_target), 4);
  EXPECT_GE(Get(p->source_calls), 4u);
}

}  // namespace
}  // namespace dmashim::testing
