// DESIGN §3, the transparency contract: a real program (probe) observes the same thing with and
// without the shim preloaded — except that under the shim its huge pages come from a pool. Each
// test also checks the pool really served the calls, so a shim that silently passed everything
// through would fail.
#include <sys/wait.h>

#include <map>

#include "gtest/gtest.h"
#include "tests/common/hugepages.h"
#include "tests/shim/harness.h"

namespace dmashim::testing {
namespace {

// A [pool.huge] table: 2 MiB private huge pages, reserve 2, block — with `over` replacing keys.
std::string PoolConfig(std::map<std::string, std::string> over) {
  std::map<std::string, std::string> keys = {
      {"match", R"({ call = "mmap", hugetlb = true, size = "2MiB" })"},
      {"reserve", "2"},
      {"mode", R"("block")"}};
  for (auto& [k, v] : over) keys[k] = v;
  std::string out = "[pool.huge]\n";
  for (auto& [k, v] : keys) out += k + " = " + v + "\n";
  return out;
}

class TransparencyTest : public ::testing::Test {
 protected:
  void SetUp() override { DMASHIM_REQUIRE_FREE_HUGE_PAGES(48); }

  // Runs `probe args` without and with the shim (pool config + `extra`).
  void Both(const std::vector<std::string>& args, std::map<std::string, std::string> over = {}) {
    RunSpec spec;
    spec.argv = {ProbePath()};
    spec.argv.insert(spec.argv.end(), args.begin(), args.end());
    plain_ = RunProgram(spec);
    spec.preload = true;
    spec.config = dir_.Write("dmashim.toml", PoolConfig(over));
    spec.run_dir = dir_.path() + "/run";
    shimmed_ = RunProgram(spec);
    EXPECT_EQ(plain_.exit_code, 0) << plain_.err;
    EXPECT_EQ(shimmed_.exit_code, 0) << shimmed_.err;
    EXPECT_EQ(shimmed_.err, "") << "the shim printed something";
  }

  // Allocations the pool served from its own elements in the shimmed run.
  uint64_t PoolHits(const std::string& pool = "huge") {
    uint64_t hits = 0;
    for (const Snapshot& s : Segments(dir_.path() + "/run")) {
      for (const PoolStats* p : s.pools) {
        if (pool == p->name) hits += Get(p->alloc_reserve);
      }
    }
    return hits;
  }

  TempDir dir_;
  RunResult plain_, shimmed_;
};

TEST_F(TransparencyTest, RecycledElementsComeBackZeroFilledEager) {
  Both({"zero", "20"}, {{"zero", R"("eager")"}});
  EXPECT_EQ(plain_.kv["dirty_pages"], "0");
  EXPECT_EQ(shimmed_.kv["dirty_pages"], "0");
  EXPECT_EQ(shimmed_.kv["failed"], "0");
  EXPECT_EQ(PoolHits(), 20u);  // every cycle reused an element the program had dirtied
}

TEST_F(TransparencyTest, RecycledElementsComeBackZeroFilledBackground) {
  Both({"zero", "20"}, {{"zero", R"("background")"}});
  EXPECT_EQ(shimmed_.kv["dirty_pages"], "0");
  EXPECT_EQ(PoolHits(), 20u);
}

TEST_F(TransparencyTest, ZeroNoneIsAnExplicitOptInThatShowsOldContents) {
  Both({"zero", "5"}, {{"zero", R"("none")"}, {"reserve", "1"}});
  EXPECT_EQ(plain_.kv["dirty_pages"], "0");
  EXPECT_EQ(shimmed_.kv["dirty_pages"], std::to_string(4 * 512));  // 4 reuses × 512 pages
}

TEST_F(TransparencyTest, SharedMappingIsSharedAcrossForkAndTheChildGetsItsOwnSegment) {
  // A pool of shared elements serves MAP_SHARED requests straight from its reserve.
  RunSpec spec;
  spec.argv = {ProbePath(), "shared-fork"};
  plain_ = RunProgram(spec);
  spec.preload = true;
  spec.config = dir_.Write("dmashim.toml",
                           "[pool.shared]\n"
                           "match = { call = \"mmap\", hugetlb = true, size = \"2MiB\", share = \"shared\" }\n"
                           "reserve = 2\n"
                           "mode = \"block\"\n");
  spec.run_dir = dir_.path() + "/run";
  shimmed_ = RunProgram(spec);
  ASSERT_EQ(shimmed_.exit_code, 0) << shimmed_.err;
  EXPECT_EQ(plain_.kv, shimmed_.kv);
  EXPECT_EQ(shimmed_.kv["seen_first"], "66");
  EXPECT_EQ(shimmed_.kv["seen_last"], "67");
  EXPECT_EQ(PoolHits("shared"), 1u);
  EXPECT_EQ(Segments(dir_.path() + "/run").size(), 2u);  // parent and child
}

TEST_F(TransparencyTest, PrivateMappingIsCopyOnWriteAcrossFork) {
  Both({"private-fork"});
  EXPECT_EQ(plain_.kv, shimmed_.kv);
  EXPECT_EQ(shimmed_.kv["parent"], "P");
  EXPECT_EQ(shimmed_.kv["child_ok"], "1");
  EXPECT_GE(PoolHits(), 1u);
}

TEST_F(TransparencyTest, PartialMunmapBehavesAsTheKernels) {
  Both({"partial-munmap"}, {{"match", R"({ call = "mmap", hugetlb = true, size = "4MiB" })"}});
  EXPECT_EQ(plain_.kv, shimmed_.kv);
  EXPECT_EQ(shimmed_.kv["second_half"], "0");
  EXPECT_EQ(shimmed_.kv["first_half"], "0");
}

TEST_F(TransparencyTest, BadMunmapGivesTheKernelsErrno) {
  Both({"bad-munmap"});
  EXPECT_EQ(plain_.kv, shimmed_.kv);
  EXPECT_EQ(shimmed_.kv["unaligned_addr"], "EINVAL");
  EXPECT_EQ(shimmed_.kv["zero_len"], "EINVAL");
  EXPECT_GE(PoolHits(), 1u);
}

TEST_F(TransparencyTest, ElementIsWritableAndZeroAfterTheAppMprotectedIt) {
  Both({"mprotect-reuse"}, {{"reserve", "1"}});  // one element: the second mapping must reuse it
  EXPECT_EQ(plain_.kv["dirty_pages"], "0");
  EXPECT_EQ(shimmed_.kv["dirty_pages"], "0");
  EXPECT_EQ(shimmed_.kv["writable"], "1");
  EXPECT_EQ(shimmed_.kv["reused"], "1");
}

TEST_F(TransparencyTest, FixedNoreplaceOnAFreedElementsAddressSucceeds) {
  Both({"fixed-noreplace"});
  EXPECT_EQ(plain_.kv, shimmed_.kv);
  EXPECT_EQ(shimmed_.kv["fixed"], "0");
  EXPECT_EQ(shimmed_.kv["same_addr"], "1");
  EXPECT_EQ(shimmed_.kv["dirty_pages"], "0");
}

TEST_F(TransparencyTest, FixedOnAFreedElementsAddressSucceeds) {
  Both({"fixed"});
  EXPECT_EQ(plain_.kv, shimmed_.kv);
  EXPECT_EQ(shimmed_.kv["fixed"], "0");
  EXPECT_EQ(shimmed_.kv["same_addr"], "1");
}

TEST_F(TransparencyTest, MremapOfAPooledRegionBehavesAsTheKernels) {
  Both({"mremap"});
  EXPECT_EQ(plain_.kv, shimmed_.kv);
}

TEST_F(TransparencyTest, StartUpSelfCheckSeesTheHooksOfEveryInterceptedFamilyFire) {
  // The probes go through the global symbol scope, as the application's calls do: a hook that
  // failed to note them would be reported as shadowed (a diagnostic line, and state 2 here).
  Both({"plain"});
  const std::vector<Snapshot> snaps = Segments(dir_.path() + "/run");
  ASSERT_EQ(snaps.size(), 1u);
  for (HookFamily f : {HookFamily::kMmap, HookFamily::kShm, HookFamily::kMlock}) {
    EXPECT_EQ(snaps[0].hooks[static_cast<size_t>(f)], HookState::kFiring)
        << "family " << static_cast<int>(f);
  }
}

TEST_F(TransparencyTest, PlainMmapIsUntouched) {
  Both({"plain"});
  EXPECT_EQ(plain_.kv, shimmed_.kv);
  EXPECT_EQ(shimmed_.kv["dirty_pages"], "0");
  EXPECT_EQ(shimmed_.kv["bad_unmap"], "EINVAL");
}

TEST_F(TransparencyTest, KernelErrnoWhenNoPoolMatchesAndPagesRunOut) {
  // The only pool serves another library: this program's calls match none, and run the node dry.
  Both({"exhaust"}, {{"match", R"({ call = "mmap", hugetlb = true, caller = "libnothere.so" })"}});
  EXPECT_EQ(plain_.kv["errno"], "ENOMEM");
  EXPECT_EQ(shimmed_.kv["errno"], "ENOMEM");
  // The shim's own pool holds its reserve (2) only once it is used; it never is here.
  EXPECT_EQ(plain_.kv["mapped"], shimmed_.kv["mapped"]);
  EXPECT_EQ(PoolHits(), 0u);
}

TEST_F(TransparencyTest, ManyThreadsNeverShareAnElement) {
  Both({"threads", "16"}, {{"reserve", "16"}});
  EXPECT_EQ(shimmed_.kv["failed"], "0");
  EXPECT_EQ(shimmed_.kv["corrupt"], "0");
  EXPECT_EQ(shimmed_.kv["ok"], std::to_string(16 * 200));
  EXPECT_EQ(plain_.kv["corrupt"], "0");
  EXPECT_GE(PoolHits(), 16u * 100);
}

}  // namespace
}  // namespace dmashim::testing
