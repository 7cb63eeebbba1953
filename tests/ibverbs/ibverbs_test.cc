// RDMA memory registration under the shim (issue 8), against the stand-in libibverbs
// (tests/ibverbs/ibverbs_standin.c: mlock + 1 ms per registration, a byte budget, rdma-core's fork
// behaviour). Guarded pass-through: same results as without the shim, registration time and
// registered bytes in the pool's stats, the pool's mode when registration runs short, and no
// MADV_DONTFORK added by the shim.
#include <sys/stat.h>

#include <cstdlib>
#include <string>

#include "gtest/gtest.h"
#include "tests/shim/harness.h"

namespace dmashim::testing {
namespace {

class IbverbsTest : public ::testing::Test {
 protected:
  RunResult Run(bool shim, std::vector<std::string> args, const std::string& toml = kPool,
                std::map<std::string, std::string> env = {}) {
    RunResult r = runs_.Run(DMASHIM_TEST_IBV_PROG, shim, std::move(args), toml, std::move(env));
    EXPECT_EQ(r.exit_code, 0) << r.err;
    last_pid_ = std::atoi(r.kv["pid"].c_str());
    r.kv.erase("pid");
    return r;
  }
  // The pool `name` of the program's own segment (a fork child writes one of its own).
  const PoolStats* Pool(const std::string& name) { return runs_.Pool(name, last_pid_); }

  static constexpr char kPool[] = R"(
[pool.rdma]
match = { call = "ibverbs" }
mode  = "fail-fast"
)";
  ShimRuns runs_;
  pid_t last_pid_ = 0;
};

TEST_F(IbverbsTest, RegistrationsPassThroughTimedAndCounted) {
  RunResult plain = Run(false, {"reg", "4", "1048576"});
  RunResult shim = Run(true, {"reg", "4", "1048576"});
  EXPECT_EQ(plain.kv["registered"], "4");
  EXPECT_EQ(plain.kv["lengths"], std::to_string(4 << 20));
  EXPECT_EQ(shim.kv, plain.kv);  // every result, including reg_calls: one real call per ibv_reg_mr
  const PoolStats* p = Pool("rdma");
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(Get(p->alloc_source), 4u);
  EXPECT_EQ(Get(p->source_calls), 4u);
  EXPECT_GE(Get(p->source_ns), 4u * 1'000'000);  // 1 ms per registration in the stand-in
  EXPECT_EQ(Get(p->frees), 4u);
  EXPECT_EQ(InUse(*p), 0);
  EXPECT_EQ(BytesInUse(*p), 0);
  EXPECT_EQ(Get(p->high_water), 4);
}

TEST_F(IbverbsTest, RegisteredBytesAreReportedWhileHeld) {
  RunResult r = Run(true, {"reg", "3", "2097152", "keep"});
  EXPECT_EQ(r.kv["registered"], "3");
  const PoolStats* p = Pool("rdma");
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(InUse(*p), 3);
  EXPECT_EQ(BytesInUse(*p), 3 * 2097152);
}

TEST_F(IbverbsTest, TheMacrosIova2PathIsSeenOnce) {
  RunResult plain = Run(false, {"optional", "65536"});
  RunResult shim = Run(true, {"optional", "65536"});
  EXPECT_EQ(plain.kv["registered"], "1");
  EXPECT_EQ(shim.kv, plain.kv);
  const PoolStats* p = Pool("rdma");
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(Get(p->alloc_source), 1u);
  EXPECT_EQ(Get(p->frees), 1u);
}

TEST_F(IbverbsTest, FailFastFailsWithTheErrnoAndIsCounted) {
  const std::map<std::string, std::string> budget = {{"IBVERBS_STANDIN_MAX_BYTES", "2097152"}};
  RunResult plain = Run(false, {"reg", "3", "1048576"}, kPool, budget);
  RunResult shim = Run(true, {"reg", "3", "1048576"}, kPool, budget);
  EXPECT_EQ(plain.kv["registered"], "2");
  EXPECT_EQ(plain.kv["errno"], "ENOMEM");
  EXPECT_EQ(shim.kv, plain.kv);
  const PoolStats* p = Pool("rdma");
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(Get(p->fail_fast), 1u);
  EXPECT_EQ(Get(p->alloc_source), 2u);
}

TEST_F(IbverbsTest, BlockModeWaitsForADeregistration) {
  const std::map<std::string, std::string> budget = {{"IBVERBS_STANDIN_MAX_BYTES", "2097152"}};
  RunResult plain = Run(false, {"wait", "1048576"}, kPool, budget);
  EXPECT_EQ(plain.kv["third"], "0");
  EXPECT_EQ(plain.kv["errno"], "ENOMEM");
  constexpr char kBlock[] = R"(
[pool.rdma]
match          = { call = "ibverbs" }
mode           = "block"
retry_interval = "20ms"
)";
  RunResult shim = Run(true, {"wait", "1048576"}, kBlock, budget);
  EXPECT_EQ(shim.kv["third"], "1") << shim.out << shim.err;
  EXPECT_GE(std::strtoull(shim.kv["third_us"].c_str(), nullptr, 10), 80000u);
  const PoolStats* p = Pool("rdma");
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(Get(p->alloc_waited), 1u);
  EXPECT_EQ(Get(p->wait_count), 1u);
  // The deregistration wakes the wait: with a 2 s poll it still ends soon after the release.
  constexpr char kSlowPoll[] = R"(
[pool.rdma]
match          = { call = "ibverbs" }
mode           = "block"
retry_interval = "2s"
retry_max      = "2s"
)";
  RunResult woken = Run(true, {"wait", "1048576"}, kSlowPoll, budget);
  EXPECT_EQ(woken.kv["third"], "1") << woken.out << woken.err;
  EXPECT_LT(std::strtoull(woken.kv["third_us"].c_str(), nullptr, 10), 1000000u)
      << "woken by the deregistration, not by the 2 s poll";
}

TEST_F(IbverbsTest, ForkBehaviourIsRdmaCoresNotTheShims) {
  // No ibv_fork_init: the shim adds no MADV_DONTFORK; the child reads the registered buffers.
  RunResult plain = Run(false, {"reg", "2", "65536"});
  RunResult shim = Run(true, {"reg", "2", "65536"});
  EXPECT_EQ(plain.kv["dontfork"], "0");
  EXPECT_EQ(plain.kv["child_ok"], "1");
  EXPECT_EQ(shim.kv, plain.kv);
  // ibv_fork_init: rdma-core marks the ranges itself; same with and without the shim.
  RunResult fplain = Run(false, {"reg", "2", "65536", "fork_init"});
  RunResult fshim = Run(true, {"reg", "2", "65536", "fork_init"});
  EXPECT_EQ(fplain.kv["dontfork"], "1");
  EXPECT_EQ(fplain.kv["fork_status"], "1");  // IBV_FORK_ENABLED
  EXPECT_EQ(fshim.kv, fplain.kv);
  // IBV_FORK_UNNEEDED (the kernel copies pinned pages on fork): nothing is added by anyone.
  const std::map<std::string, std::string> unneeded = {{"IBVERBS_STANDIN_FORK_UNNEEDED", "1"}};
  RunResult uplain = Run(false, {"reg", "2", "65536", "fork_init"}, kPool, unneeded);
  RunResult ushim = Run(true, {"reg", "2", "65536", "fork_init"}, kPool, unneeded);
  EXPECT_EQ(uplain.kv["fork_status"], "2");
  EXPECT_EQ(uplain.kv["dontfork"], "0");
  EXPECT_EQ(ushim.kv, uplain.kv);
}

// The shim's table of registered regions is guarded by a lock that is held across fork: a child
// forked while other threads register and deregister can register and deregister too, instead of
// waiting for ever on a lock held by a thread that is not in the child.
TEST_F(IbverbsTest, ForkWhileOtherThreadsRegisterLeavesTheChildAbleToRegister) {
  RunResult r = Run(true, {"forkstorm", "500"}, kPool, {{"IBVERBS_STANDIN_DELAY_US", "0"}});
  EXPECT_EQ(r.kv["forks"], "500") << r.out << r.err;
  EXPECT_EQ(r.kv["hung"], "0") << "a child hung (killed after 5 s)";
  EXPECT_EQ(r.kv["failed"], "0");
}

}  // namespace
}  // namespace dmashim::testing
