// Faults under a running program (issue 7, items 1 and 3): the real shim preloaded into rprobe.
//
// Item 1: huge pages are taken away while the program runs — by another process that grabs every
// page that becomes free, and by lowering nr_hugepages. The program's `block` pool (MAP_PRIVATE)
// must see zero failures with every wait recorded; its `fail-fast` pool (MAP_SHARED) fails, and
// every failure the program saw is counted in the segment, exactly.
// Item 3: a storm of handled signals hits threads waiting in the pool: `interruptible = false`
// waits keep waiting and complete, `interruptible = true` waits end with EINTR; either way the
// pool is whole afterwards.
#include <algorithm>
#include <string>

#include "gtest/gtest.h"
#include "tests/reliability/rutil.h"

namespace dmashim::testing {
namespace {

constexpr char kTwoPools[] = R"(
[pool.blk]
match    = { call = "mmap", hugetlb = true, size = "2MiB", share = "private" }
reserve  = 2
keep     = 0
mode     = "block"
prefault = "startup"
retry_interval = "5ms"
retry_max      = "20ms"

[pool.ff]
match    = { call = "mmap", hugetlb = true, size = "2MiB", share = "shared" }
reserve  = 1
keep     = 0
mode     = "fail-fast"
prefault = "startup"
)";

class PagesTakenAway : public ::testing::Test {
 protected:
  void SetUp() override { DMASHIM_REQUIRE_FREE_HUGE_PAGES(16); }

  // Starts `rprobe churn 4 2 2000`, runs `take_away` once it is up, then lets it run 1 s, calls
  // `give_back`, and stops the program 200 ms later.
  template <typename Take, typename Give>
  RunResult Churn(Take take_away, Give give_back) {
    RunSpec spec;
    spec.argv = {RprobePath(), "churn", "4", "2", "2000"};
    spec.preload = true;
    spec.config = dir_.Write("dmashim.toml", kTwoPools);
    spec.run_dir = dir_.path() + "/run";
    Child child(spec);
    EXPECT_EQ(child.ReadLine(), "ready");
    take_away();
    usleep(1'000'000);
    give_back();
    usleep(200'000);
    child.WriteLine("stop");
    RunResult r = child.Wait();
    pid_ = child.pid();
    snaps_ = Segments(spec.run_dir);
    return r;
  }

  void ExpectGuarantees(RunResult& r) {
    ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
    EXPECT_EQ(r.kv["corrupt"], "0");
    ASSERT_EQ(snaps_.size(), 1u);
    const PoolStats* blk = snaps_[0].pools.size() > 2 ? snaps_[0].pools[1] : nullptr;
    const PoolStats* ff = snaps_[0].pools.size() > 2 ? snaps_[0].pools[2] : nullptr;
    ASSERT_NE(blk, nullptr);
    ASSERT_NE(ff, nullptr);
    ASSERT_STREQ(blk->name, "blk");
    ASSERT_STREQ(ff->name, "ff");

    // block: zero failed allocations, and the waits that made that possible are all recorded.
    const uint64_t block_ok = std::stoull(r.kv["block_ok"]);
    EXPECT_EQ(r.kv["block_enomem"], "0");
    EXPECT_EQ(r.kv["block_other"], "0");
    EXPECT_EQ(Failures(blk), 0u);
    EXPECT_EQ(Allocs(blk), block_ok);
    EXPECT_EQ(Get(blk->frees), block_ok);
    EXPECT_GT(Get(blk->alloc_waited), 0u) << "4 threads on 2 pages: some must have waited";
    EXPECT_EQ(Get(blk->wait_count), Get(blk->alloc_waited));
    EXPECT_GT(Get(blk->wait_sum_ns), 0u);
    // No single call blocked longer than the whole wait time recorded.
    EXPECT_LE(std::stoull(r.kv["block_max_us"]) * 1000, Get(blk->wait_sum_ns) + 50'000'000u);
    EXPECT_EQ(InUse(*blk), 0);
    EXPECT_EQ(Get(blk->blocked_now), 0);

    // fail-fast: it failed, and every failure the program saw is counted — exactly.
    const uint64_t ff_enomem = std::stoull(r.kv["ff_enomem"]);
    EXPECT_GT(ff_enomem, 0u);
    EXPECT_EQ(r.kv["ff_other"], "0");
    EXPECT_EQ(Get(ff->fail_fast), ff_enomem);
    EXPECT_EQ(Failures(ff), ff_enomem);
    EXPECT_EQ(Allocs(ff), std::stoull(r.kv["ff_ok"]));
    EXPECT_EQ(Get(ff->frees), std::stoull(r.kv["ff_ok"]));
    EXPECT_EQ(Get(ff->wait_count), 0u);
  }

  TempDir dir_;
  pid_t pid_ = 0;
  std::vector<Snapshot> snaps_;
};

TEST_F(PagesTakenAway, AnotherProcessGrabsEveryFreePage) {
  std::unique_ptr<Grabber> g;
  bool took = false;
  RunResult r = Churn([&] { g = std::make_unique<Grabber>(); }, [&] { took = g->Stop(); });
  EXPECT_TRUE(took) << "the grabber never held a page";
  ExpectGuarantees(r);
}

TEST_F(PagesTakenAway, NrHugepagesIsLoweredWhileTheProgramRuns) {
  NrHugepages nr;
  long lowered = -1;
  RunResult r = Churn(
      [&] {
        // Drop every free page from the node's pool, and 3 of the pages the program holds (up to 6:
        // one per thread): those become surplus and go back to the kernel when freed, never to
        // return. The program is left with fewer pages than threads.
        const long free = FreeHugePages2M();
        lowered = std::max(0L, nr.old() - free - 3);
        ASSERT_TRUE(nr.Set(lowered));
      },
      [&] { EXPECT_TRUE(nr.Set(nr.old())); });
  EXPECT_EQ(NrHugepages::Read(), nr.old()) << "nr_hugepages must be back";
  EXPECT_GE(lowered, 0);
  ExpectGuarantees(r);
}

// Item 3 under the shim: rprobe holds the pool's 2 elements while a hog holds every other page;
// 4 threads wait for a third and are stormed with SIGUSR1 until they are done.
class SignalStorm : public ::testing::Test {
 protected:
  void SetUp() override { DMASHIM_REQUIRE_FREE_HUGE_PAGES(8); }

  RunResult Run(bool interruptible) {
    RunSpec spec;
    spec.argv = {RprobePath(), "sigstorm", "2", "4", "500"};
    spec.preload = true;
    spec.config = dir_.Write("dmashim.toml", std::string(R"(
[pool.huge]
match    = { call = "mmap", hugetlb = true, size = "2MiB" }
reserve  = 2
prefault = "startup"
mode     = "block"
retry_interval = "10ms"
retry_max      = "50ms"
interruptible  = )") + (interruptible ? "true" : "false") + "\n");
    spec.run_dir = dir_.path() + "/run";
    Child child(spec);
    EXPECT_EQ(child.ReadLine(), "ready");
    HugePageHog hog;
    EXPECT_TRUE(hog.ok()) << hog.error();
    child.WriteLine("go");
    RunResult r = child.Wait();
    snaps_ = Segments(spec.run_dir);
    pool_ = snaps_.size() == 1 && snaps_[0].pools.size() > 1 ? snaps_[0].pools[1] : nullptr;
    return r;
  }

  TempDir dir_;
  std::vector<Snapshot> snaps_;
  const PoolStats* pool_ = nullptr;
};

TEST_F(SignalStorm, UninterruptibleWaitsKeepWaitingAndComplete) {
  RunResult r = Run(false);
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_EQ(r.kv["done_before_release"], "0");
  EXPECT_EQ(r.kv["ok"], "4");
  EXPECT_EQ(r.kv["eintr"], "0");
  EXPECT_EQ(r.kv["other"], "0");
  EXPECT_EQ(r.kv["after"], "2");
  EXPECT_GT(std::stol(r.kv["signals"]), 100);
  ASSERT_NE(pool_, nullptr);
  EXPECT_EQ(Get(pool_->alloc_waited), 4u);
  EXPECT_EQ(Get(pool_->wait_count), 4u);
  EXPECT_EQ(Failures(pool_), 0u);
  EXPECT_EQ(InUse(*pool_), 0);
  EXPECT_EQ(Get(pool_->blocked_now), 0);
  EXPECT_EQ(Allocs(pool_), Get(pool_->frees));
}

TEST_F(SignalStorm, InterruptibleWaitsEndWithEintrAndThePoolStaysWhole) {
  RunResult r = Run(true);
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_EQ(r.kv["done_before_release"], "4");
  EXPECT_EQ(r.kv["ok"], "0");
  EXPECT_EQ(r.kv["eintr"], "4");
  EXPECT_EQ(r.kv["other"], "0");
  EXPECT_EQ(r.kv["after"], "2");
  ASSERT_NE(pool_, nullptr);
  EXPECT_EQ(Get(pool_->fail_interrupted), 4u);
  EXPECT_EQ(Failures(pool_), 4u);
  EXPECT_EQ(Get(pool_->wait_count), 4u);
  EXPECT_EQ(InUse(*pool_), 0);
  EXPECT_EQ(Get(pool_->blocked_now), 0);
  EXPECT_EQ(Get(pool_->elements_total), 2);
  EXPECT_EQ(Allocs(pool_), Get(pool_->frees));
}

}  // namespace
}  // namespace dmashim::testing
