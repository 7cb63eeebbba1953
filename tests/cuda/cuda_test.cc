// CUDA pinned host memory under the shim (issue 8), against the stand-in CUDA runtime
// (tests/cuda/cudart_standin.c: mmap + mlock + 2 ms per pin, with call counters). The same program
// runs with and without libdmashim.so preloaded: same results, far fewer real pins, less time, the
// rounding waste and the time in the real calls in the pool's stats, max and modes honoured, and the
// reserve built at the first CUDA call, not at load.
#include <sys/stat.h>

#include <cstdlib>
#include <string>

#include "gtest/gtest.h"
#include "tests/shim/harness.h"

namespace dmashim::testing {
namespace {

std::string LoopPath() { return DMASHIM_TEST_CUDA_LOOP; }

class CudaTest : public ::testing::Test {
 protected:
  RunResult Run(bool shim, std::vector<std::string> args, const std::string& pool_toml = "",
                std::map<std::string, std::string> env = {}) {
    RunResult r = runs_.Run(LoopPath(), shim, std::move(args), pool_toml, std::move(env));
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return r;
  }

  // The pool `name` in the last shim run's segment.
  const PoolStats* Pool(const std::string& name) { return runs_.Pool(name); }

  static uint64_t U(RunResult& r, const char* k) { return std::strtoull(r.kv[k].c_str(), nullptr, 10); }

  ShimRuns runs_;
};

constexpr char kCachePool[] = R"(
[pool.gpu-staging]
match = { call = "cuda" }
keep  = 64
mode  = "fail-fast"
)";

TEST_F(CudaTest, SameResultsFarFewerPinsLessTime) {
  constexpr int kIters = 20;
  RunResult plain = Run(false, {"loop", std::to_string(kIters)});
  RunResult shim = Run(true, {"loop", std::to_string(kIters)}, kCachePool);
  for (const char* k : {"rc_ok", "flags_ok", "data_ok"}) {
    EXPECT_EQ(plain.kv[k], "1") << k << " " << plain.out;
    EXPECT_EQ(shim.kv[k], "1") << k << " " << shim.out << shim.err;
  }
  EXPECT_EQ(shim.kv["checksum"], plain.kv["checksum"]);
  // Without the shim every allocation pins: 8 per iteration.
  EXPECT_EQ(U(plain, "pins"), 8u * kIters);
  EXPECT_EQ(U(plain, "free_host"), 8u * kIters);
  // With it: 5 large blocks allocated once (cached per size class and flag set) and one registered
  // page per flag set of the 3 small sizes.
  EXPECT_EQ(U(shim, "host_alloc"), 5u);
  EXPECT_EQ(U(shim, "register"), 3u);
  EXPECT_EQ(U(shim, "free_host"), 0u);  // cached, not freed, until exit
  const uint64_t plain_us = U(plain, "alloc_us"), shim_us = U(shim, "alloc_us");
  EXPECT_GE(plain_us, 8u * kIters * 2000);  // 2 ms per real pin
  EXPECT_LT(shim_us * 5, plain_us) << "plain " << plain_us << " us, shim " << shim_us << " us";
  printf("[ figures ] pins %llu -> %llu, time in allocation %llu us -> %llu us (%.1fx)\n",
         (unsigned long long)U(plain, "pins"), (unsigned long long)U(shim, "pins"),
         (unsigned long long)plain_us, (unsigned long long)shim_us,
         shim_us ? double(plain_us) / double(shim_us) : 0.0);

  const PoolStats* p = Pool("gpu-staging");
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(Get(p->alloc_source), 8u);  // the first iteration
  EXPECT_EQ(Get(p->alloc_reserve), 8u * (kIters - 1));
  EXPECT_EQ(Get(p->frees), 8u * kIters);
  EXPECT_EQ(Get(p->source_calls), 8u);  // 5 cudaHostAlloc + 3 cudaHostRegister
  EXPECT_GE(Get(p->source_ns), 8u * 2'000'000);
  EXPECT_EQ(InUse(*p), 0);
  EXPECT_EQ(Get(p->high_water), 8);
  EXPECT_EQ(ReserveLevel(*p), 5);  // the cached large blocks
  EXPECT_EQ(Get(p->fail_fast), 0u);
}

TEST_F(CudaTest, RoundingWasteIsSmallAndReported) {
  // 3 × 100000 bytes held at exit: class 106496 (1/8-power-of-two steps), not 131072.
  RunResult r = Run(true, {"hold", "3", "100000", "0", "keep"}, kCachePool);
  EXPECT_EQ(r.kv["held"], "3");
  const PoolStats* p = Pool("gpu-staging");
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(InUse(*p), 3);
  EXPECT_EQ(RequestedBytesInUse(*p), 300000);
  EXPECT_EQ(BytesInUse(*p), 3 * 106496);
  const double waste = double(BytesInUse(*p) - RequestedBytesInUse(*p)) /
                       double(RequestedBytesInUse(*p));
  EXPECT_LT(waste, 0.125);
  printf("[ figures ] rounding waste %.1f%% (a power-of-two cache: %.1f%%)\n", waste * 100,
         (131072.0 - 100000.0) / 100000.0 * 100);

  // Small blocks: 3 × 1000 bytes carved from one registered page, class 1024.
  RunResult s = Run(true, {"hold", "3", "1000", "0", "keep"}, kCachePool);
  EXPECT_EQ(s.kv["pins"], "1");
  const PoolStats* q = Pool("gpu-staging");
  ASSERT_NE(q, nullptr);
  EXPECT_EQ(RequestedBytesInUse(*q), 3000);
  EXPECT_EQ(BytesInUse(*q), 3 * 1024);
}

// Large blocks (4 MiB and up) are mapped, faulted in by several threads and registered, not
// allocated by cudaHostAlloc — except write-combined ones, which only cudaHostAlloc can give.
TEST_F(CudaTest, LargeBlocksArePinnedByRegistrationExceptWriteCombined) {
  RunResult r = Run(true, {"hold", "2", "8388608", "0"}, kCachePool);
  EXPECT_EQ(r.kv["held"], "2") << r.out << r.err;
  EXPECT_EQ(r.kv["frees_ok"], "1");
  EXPECT_EQ(r.kv["register"], "2");
  EXPECT_EQ(r.kv["host_alloc"], "0");
  EXPECT_EQ(r.kv["unregister"], "0");  // freed into the cache, still pinned
  // Without a cache the frees give them back: unregistered (and unmapped) by the shim.
  RunResult nocache = Run(true, {"hold", "2", "8388608", "0"},
                          "[pool.gpu-staging]\nmatch = { call = \"cuda\" }\nkeep = 0\n");
  EXPECT_EQ(nocache.kv["frees_ok"], "1") << nocache.out << nocache.err;
  EXPECT_EQ(nocache.kv["register"], "2");
  EXPECT_EQ(nocache.kv["unregister"], "2");
  RunResult wc = Run(true, {"hold", "2", "8388608", "4"}, kCachePool);
  EXPECT_EQ(wc.kv["held"], "2") << wc.out << wc.err;
  EXPECT_EQ(wc.kv["host_alloc"], "2");
  EXPECT_EQ(wc.kv["register"], "0");
}

TEST_F(CudaTest, FailFastReturnsMemoryAllocationAtMax) {
  constexpr char kMax[] = R"(
[pool.gpu-staging]
match = { call = "cuda" }
max   = 4
mode  = "fail-fast"
)";
  RunResult plain = Run(false, {"hold", "5", "200000", "0"});
  EXPECT_EQ(plain.kv["held"], "5");
  RunResult r = Run(true, {"hold", "5", "200000", "0"}, kMax);
  EXPECT_EQ(r.kv["held"], "4");
  for (int i = 0; i < 4; ++i) EXPECT_EQ(r.kv["rc" + std::to_string(i)], "0");
  EXPECT_EQ(r.kv["rc4"], "2");  // cudaErrorMemoryAllocation
  EXPECT_EQ(r.kv["frees_ok"], "1");
  const PoolStats* p = Pool("gpu-staging");
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(Get(p->fail_fast), 1u);
  EXPECT_EQ(Get(p->high_water), 4);
}

TEST_F(CudaTest, TimeoutModeWaitsThenFails) {
  constexpr char kTimeout[] = R"(
[pool.gpu-staging]
match = { call = "cuda" }
max   = 2
mode  = "timeout:150ms"
)";
  RunResult r = Run(true, {"hold", "3", "200000", "0"}, kTimeout);
  EXPECT_EQ(r.kv["rc2"], "2");
  EXPECT_GE(U(r, "us2"), 150000u);
  const PoolStats* p = Pool("gpu-staging");
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(Get(p->fail_timeout), 1u);
  EXPECT_EQ(Get(p->wait_count), 1u);
}

// A cudaHostAlloc waiting in block mode is woken by a block freed in the same process, not left to
// its next poll: retry_interval is 2 s here, and the block comes back after 100 ms.
TEST_F(CudaTest, BlockModeWaitEndsWhenAnotherThreadFreesABlock) {
  constexpr char kBlock[] = R"(
[pool.gpu-staging]
match          = { call = "cuda" }
max            = 2
mode           = "block"
retry_interval = "2s"
retry_max      = "2s"
)";
  RunResult r = Run(true, {"handoff", "2", "200000", "100"}, kBlock);
  EXPECT_EQ(r.kv["rc"], "0") << r.out;
  EXPECT_GE(U(r, "waited_us"), 100000u);
  EXPECT_LT(U(r, "waited_us"), 1000000u) << "woken by the free, not by the 2 s poll";
  const PoolStats* p = Pool("gpu-staging");
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(Get(p->wait_count), 1u);
  EXPECT_EQ(Get(p->alloc_waited), 1u);
  EXPECT_EQ(Get(p->fail_timeout) + Get(p->fail_source) + Get(p->fail_fast), 0u);
}

TEST_F(CudaTest, ReserveIsBuiltAtTheFirstCudaCallNotAtLoad) {
  constexpr char kReserve[] = R"(
[pool.gpu-staging]
match   = { call = "cuda" }
reserve = 4
prefault = "startup"
)";
  RunResult r = Run(true, {"loop", "1"}, kReserve);
  EXPECT_EQ(r.kv["before"], "0") << "the stand-in was called before the program's first CUDA call";
  // 4 reserve pages of the default flag set, then one page each for Portable and Mapped.
  EXPECT_EQ(U(r, "register"), 6u) << r.out;
  EXPECT_EQ(r.kv["rc_ok"], "1");
  const PoolStats* p = Pool("gpu-staging");
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(Get(p->reserve_target), 4);
  // The 1000-byte default-flag block came from a reserve page: no CUDA call for it.
  EXPECT_EQ(Get(p->alloc_reserve), 1u);
}

TEST_F(CudaTest, RegisterAndForeignPointersBehaveAsWithoutTheShim) {
  RunResult plain = Run(false, {"register", "1048576"});
  RunResult shim = Run(true, {"register", "1048576"}, kCachePool);
  EXPECT_EQ(plain.kv["register"], "0");
  EXPECT_EQ(plain.kv["flags"], "2");
  EXPECT_EQ(plain.kv["unregister_again"], "713");
  EXPECT_EQ(shim.kv, plain.kv);
  const PoolStats* p = Pool("gpu-staging");
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(Get(p->alloc_source), 1u);  // the registration, guarded
  EXPECT_EQ(BytesInUse(*p), 0);   // unregistered again
  EXPECT_GE(Get(p->source_ns), 2'000'000u);

  RunResult fplain = Run(false, {"foreign"});
  RunResult fshim = Run(true, {"foreign"}, kCachePool);
  EXPECT_EQ(fplain.kv["foreign_free"], "1");
  EXPECT_EQ(fplain.kv["double_free"], "1");
  EXPECT_EQ(fshim.kv, fplain.kv);
}

TEST_F(CudaTest, WithoutACudaPoolCallsPassThroughAndAreTimed) {
  RunResult plain = Run(false, {"loop", "2"});
  RunResult r = Run(true, {"loop", "2"}, "");
  EXPECT_EQ(r.kv["pins"], plain.kv["pins"]);
  EXPECT_EQ(r.kv["checksum"], plain.kv["checksum"]);
  EXPECT_EQ(r.kv["flags_ok"], "1");
  const PoolStats* p = Pool("default");
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(Get(p->alloc_source), 16u);
  EXPECT_GE(Get(p->source_ns), 16u * 2'000'000);
}

// The CUDA pool's block-cache lock (and the DmaPools' under it) is held across fork: a child forked
// while other threads allocate and free pinned blocks can allocate and free too, instead of waiting
// for ever on a lock held by a thread that is not in the child. (Only the shim's state is
// exercised here: the real CUDA runtime cannot be used in a fork child at all.)
TEST_F(CudaTest, ForkWhileOtherThreadsAllocateLeavesTheChildAbleToAllocate) {
  RunResult r = Run(true, {"forkstorm", "100"}, kCachePool);
  EXPECT_EQ(r.kv["forks"], "100") << r.out << r.err;
  EXPECT_EQ(r.kv["hung"], "0") << "a child hung (killed after 5 s)";
  EXPECT_EQ(r.kv["failed"], "0");
}

// The pools are built, and their reserve pinned, at the first CUDA call, under a lock. A fork
// while another thread is in there used to leave that lock held in the child, whose own first
// CUDA call then waited for ever; the child now goes without pools. A fork just after the build,
// while that thread creates the first DmaPool, used to leave the DmaPool's one-time registration
// with the fork handlers in progress in the child (a function-local static waiting for the
// registry lock the fork held): the child's first DmaPool waited for ever. Where the fork lands
// varies, so the program runs three times.
TEST_F(CudaTest, ForkDuringThePoolsBuildLeavesTheChildAbleToAllocate) {
  constexpr char kSlowReserve[] = R"(
[pool.gpu-staging]
match   = { call = "cuda" }
reserve = 10
)";
  for (int run = 0; run < 3; ++run) {
    RunResult r = Run(true, {"forkinbuild"}, kSlowReserve, {{"CUDART_STANDIN_DELAY_US", "20000"}});
    const uint64_t pins = U(r, "pins_at_fork");
    EXPECT_GE(pins, 1u) << "the fork came before the build began: " << r.out << r.err;
    EXPECT_LT(pins, 10u) << "the fork came after the build ended: " << r.out << r.err;
    EXPECT_EQ(r.kv["child"], "ok") << "run " << run << ": " << r.out << r.err;
  }
}

}  // namespace
}  // namespace dmashim::testing
