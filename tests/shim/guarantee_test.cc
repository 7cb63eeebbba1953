// The guarantee (issue 3, tests 2): a program whose huge-page allocation would fail because another
// process took the node's pages after it started succeeds under the shim with a reserve — on every
// path: served from the pool (anonymous private) or by release-and-retry (anonymous shared,
// MAP_FIXED over a reservation, a hugetlbfs file mapped or fallocated, a memfd_create(MFD_HUGETLB)
// fd, SysV SHM_HUGETLB). And the three modes are each observable from outside when no reserve is
// left.
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>

#include <map>

#include "gtest/gtest.h"
#include "tests/common/hugepages.h"
#include "tests/shim/harness.h"

namespace dmashim::testing {
namespace {

// Reserve 4 pages at start-up, fail-fast: anything that succeeds under a hog was saved by the
// reserve, not by waiting.
constexpr char kReserveConfig[] = R"(
[pool.huge]
match    = { call = "mmap", hugetlb = true, size = "2MiB" }
reserve  = 4
prefault = "startup"
mode     = "fail-fast"
)";

struct Outcome {
  std::string result;
  RunResult run;
};

class GuaranteeTest : public ::testing::TestWithParam<const char*> {
 protected:
  void SetUp() override {
    DMASHIM_REQUIRE_FREE_HUGE_PAGES(16);
    mnt_ = dir_.path() + "/hugetlbfs";
    mkdir(mnt_.c_str(), 0755);
    // In a mount namespace of this thread's own (the probes it forks inherit it), with nothing
    // propagated back: the mount dies with this process even when it is killed before TearDown.
    // Where namespaces are refused (a container's filter), the mount is made where we are and
    // only TearDown takes it off.
    if (unshare(CLONE_NEWNS) == 0) {
      ASSERT_EQ(mount("none", "/", nullptr, MS_REC | MS_PRIVATE, nullptr), 0) << strerror(errno);
    }
    ASSERT_EQ(mount("none", mnt_.c_str(), "hugetlbfs", 0, "pagesize=2M"), 0) << strerror(errno);
    mounted_ = true;
  }
  void TearDown() override {
    if (mounted_) umount(mnt_.c_str());
  }

  // Starts the probe, lets a hog take every free page once the probe is up, then asks for one
  // allocation of `kind`.
  Outcome Attempt(const std::string& kind, bool shim) {
    RunSpec spec;
    spec.argv = {ProbePath(), "guarantee", kind, mnt_};
    if (shim) {
      spec.preload = true;
      spec.config = dir_.Write("dmashim.toml", kReserveConfig);
      spec.run_dir = dir_.path() + "/run";
    }
    Child child(spec);
    EXPECT_EQ(child.ReadLine(), "ready");
    HugePageHog hog;
    EXPECT_TRUE(hog.ok()) << hog.error();
    EXPECT_EQ(FreeHugePages2M(), 0);
    child.WriteLine("go");
    Outcome o;
    o.run = child.Wait();
    o.result = o.run.kv["result"];
    pid_ = o.run.exit_code >= 0 ? child.pid() : 0;
    return o;
  }

  TempDir dir_;
  std::string mnt_;
  bool mounted_ = false;
  pid_t pid_ = 0;
};

TEST_P(GuaranteeTest, SucceedsUnderTheShimWhereTheKernelAloneFails) {
  const std::string kind = GetParam();
  const Outcome plain = Attempt(kind, false);
  EXPECT_NE(plain.result, "ok") << "without the shim the hog should make " << kind << " fail";
  EXPECT_EQ(plain.run.exit_code, 1);

  const Outcome shimmed = Attempt(kind, true);
  EXPECT_EQ(shimmed.result, "ok") << shimmed.run.out << shimmed.run.err;
  EXPECT_EQ(shimmed.run.exit_code, 0);
  // The pool says how: a pool element (anonymous private) or its reserve released and the call
  // retried — either way counted as served by the reserve, never as a failure.
  const auto snaps = Segments(dir_.path() + "/run");
  ASSERT_EQ(snaps.size(), 1u);
  const PoolStats* pool = snaps[0].pools.size() > 1 ? snaps[0].pools[1] : nullptr;
  ASSERT_NE(pool, nullptr);
  EXPECT_STREQ(pool->name, "huge");
  EXPECT_EQ(Get(pool->alloc_reserve), 1u);
  EXPECT_EQ(Get(pool->fail_fast), 0u);
  if (kind != "anon-private") {
    EXPECT_GE(Get(pool->source_releases), 1u);
  }
}

INSTANTIATE_TEST_SUITE_P(EveryPath, GuaranteeTest,
                         ::testing::Values("anon-private", "anon-shared", "fixed", "hugetlbfs",
                                           "fallocate", "memfd", "shm"),
                         [](const auto& info) {
                           std::string n = info.param;
                           for (char& c : n) {
                             if (c == '-') c = '_';
                           }
                           return n;
                         });

// Modes with nothing left: the probe takes the pool's two reserve elements while a hog holds every
// other page, then asks for a third; a thread of its own frees one after 600 ms.
class ModesTest : public ::testing::Test {
 protected:
  void SetUp() override { DMASHIM_REQUIRE_FREE_HUGE_PAGES(8); }

  RunResult Third(const std::string& mode) {
    RunSpec spec;
    spec.argv = {ProbePath(), "modes"};
    spec.preload = true;
    spec.config = dir_.Write("dmashim.toml", R"(
[pool.huge]
match    = { call = "mmap", hugetlb = true, size = "2MiB" }
reserve  = 2
prefault = "startup"
mode     = ")" + mode + "\"\n");
    spec.run_dir = dir_.path() + "/run";
    Child child(spec);
    EXPECT_EQ(child.ReadLine(), "ready");
    HugePageHog hog;
    EXPECT_TRUE(hog.ok()) << hog.error();
    child.WriteLine("go");
    RunResult r = child.Wait();
    snaps_ = Segments(dir_.path() + "/run");
    EXPECT_EQ(snaps_.size(), 1u);
    static const PoolStats kEmpty{};
    pool_ = snaps_.size() == 1 && snaps_[0].pools.size() > 1 ? snaps_[0].pools[1] : &kEmpty;
    return r;
  }

  TempDir dir_;
  const PoolStats* pool_ = nullptr;
  std::vector<Snapshot> snaps_;  // owns what pool_ points into
};

TEST_F(ModesTest, FailFastFailsAtOnceAndCountsIt) {
  RunResult r = Third("fail-fast");
  EXPECT_EQ(r.kv["third"], "ENOMEM");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_LT(std::stoll(r.kv["elapsed_ms"]), 300);
  EXPECT_EQ(Get(pool_->fail_fast), 1u);
  EXPECT_EQ(Get(pool_->alloc_reserve), 2u);
  EXPECT_EQ(Get(pool_->wait_count), 0u);
}

TEST_F(ModesTest, TimeoutFailsAfterItsBoundAndCountsIt) {
  RunResult r = Third("timeout:300ms");
  EXPECT_EQ(r.kv["third"], "ENOMEM");
  const long long ms = std::stoll(r.kv["elapsed_ms"]);
  EXPECT_GE(ms, 290);
  EXPECT_LT(ms, 590);  // before the free at 600 ms
  EXPECT_EQ(Get(pool_->fail_timeout), 1u);
  EXPECT_EQ(Get(pool_->wait_count), 1u);
}

TEST_F(ModesTest, BlockWaitsForTheFreeAndSucceeds) {
  RunResult r = Third("block");
  EXPECT_EQ(r.kv["third"], "ok");
  EXPECT_EQ(r.exit_code, 0);
  const long long ms = std::stoll(r.kv["elapsed_ms"]);
  EXPECT_GE(ms, 590);
  EXPECT_LT(ms, 1500);  // woken by the free, not by a retry round
  EXPECT_EQ(Get(pool_->alloc_waited), 1u);
  EXPECT_EQ(Get(pool_->wait_count), 1u);
  EXPECT_GE(Get(pool_->wait_sum_ns), 590'000'000u);
  EXPECT_EQ(Get(pool_->fail_fast) + Get(pool_->fail_timeout), 0u);
}

}  // namespace
}  // namespace dmashim::testing
