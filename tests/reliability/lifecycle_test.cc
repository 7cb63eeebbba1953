// Process life under the preload (issue 7, item 4): a fork storm with allocations in parent and
// children, vfork + exec, posix_spawn, a chain of execs, and SIGKILL in the middle of allocating.
// Every process gets a segment of its own that counts exactly its own allocations; a killed
// program's segment is intact, readable, exported once more and then reaped.
#include <signal.h>
#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <set>

#include "absl/strings/str_split.h"
#include "exporter/collector.h"
#include "gtest/gtest.h"
#include "tests/reliability/rutil.h"

namespace dmashim::testing {
namespace {

constexpr char kPool[] = R"(
[pool.huge]
match    = { call = "mmap", hugetlb = true, size = "2MiB", share = "private" }
reserve  = 2
mode     = "block"
retry_interval = "5ms"
)";

class Lifecycle : public ::testing::Test {
 protected:
  void SetUp() override { DMASHIM_REQUIRE_FREE_HUGE_PAGES(40); }

  RunResult Run(std::vector<std::string> args) {
    RunSpec spec;
    spec.argv = {RprobePath()};
    spec.argv.insert(spec.argv.end(), args.begin(), args.end());
    spec.preload = true;
    spec.config = dir_.Write("dmashim.toml", kPool);
    spec.run_dir = run_dir();
    Child child(spec);
    pid_ = child.pid();
    RunResult r = child.Wait();
    snaps_ = Segments(run_dir());
    return r;
  }
  std::string run_dir() const { return dir_.path() + "/run"; }

  std::vector<const Snapshot*> Of(pid_t pid) const {
    std::vector<const Snapshot*> out;
    for (const Snapshot& s : snaps_) {
      if (s.pid == pid) out.push_back(&s);
    }
    return out;
  }
  static const PoolStats* Huge(const Snapshot& s) {
    for (const PoolStats* p : s.pools) {
      if (std::string(p->name) == "huge") return p;
    }
    return nullptr;
  }

  TempDir dir_;
  pid_t pid_ = 0;
  std::vector<Snapshot> snaps_;
};

TEST_F(Lifecycle, ForkStormGivesEveryChildItsOwnSegmentCountingOnlyItsOwnAllocations) {
  RunResult r = Run({"forkstorm", "24", "2"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_EQ(r.kv["bad_children"], "0");
  EXPECT_EQ(r.kv["parent_failed"], "0");
  EXPECT_EQ(r.kv["corrupt"], "0");
  const std::vector<std::string> children = absl::StrSplit(r.kv["children"], ',');
  ASSERT_EQ(children.size(), 24u);
  EXPECT_EQ(snaps_.size(), 25u);

  const auto parent = Of(pid_);
  ASSERT_EQ(parent.size(), 1u);
  const PoolStats* pp = Huge(*parent[0]);
  ASSERT_NE(pp, nullptr);
  EXPECT_EQ(Allocs(pp), std::stoull(r.kv["parent_ok"]));  // no child's allocation leaked in
  EXPECT_EQ(Get(pp->frees), Allocs(pp));
  EXPECT_EQ(Failures(pp), 0u);
  EXPECT_TRUE(parent[0]->exited);

  std::set<pid_t> seen;
  for (const std::string& c : children) {
    const pid_t pid = std::stoi(c);
    const auto mine = Of(pid);
    ASSERT_EQ(mine.size(), 1u) << "child " << pid;
    seen.insert(pid);
    const PoolStats* cp = Huge(*mine[0]);
    ASSERT_NE(cp, nullptr);
    EXPECT_EQ(Allocs(cp), 2u) << "child " << pid;
    EXPECT_EQ(Get(cp->frees), 2u);
    EXPECT_EQ(Failures(cp), 0u);
    // The element the parent thread held at fork time is the child's own copy, in use forever.
    EXPECT_LE(InUse(*cp), 1);
    EXPECT_EQ(mine[0]->uid, geteuid());
  }
  EXPECT_EQ(seen.size(), 24u);
}

// vfork + exec and posix_spawn: the parent allocates before and after; the child image (which the
// preload follows) allocates twice. Two segments, each with its own process's count.
void ExpectParentAndChild(Lifecycle* t, RunResult& r, pid_t parent,
                          const std::vector<Snapshot>& snaps) {
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_EQ(r.kv["child_rc"], "0") << r.out << r.err;
  EXPECT_EQ(r.kv["parent_ok"], "2");
  EXPECT_EQ(r.kv["corrupt"], "0");
  const pid_t child = std::stoi(r.kv["child"]);
  ASSERT_EQ(snaps.size(), 2u);
  for (const Snapshot& s : snaps) {
    ASSERT_TRUE(s.pid == parent || s.pid == child) << s.pid;
    const PoolStats* p = nullptr;
    for (const PoolStats* q : s.pools) {
      if (std::string(q->name) == "huge") p = q;
    }
    ASSERT_NE(p, nullptr);
    EXPECT_EQ(Allocs(p), 2u) << (s.pid == parent ? "parent" : "child");
    EXPECT_EQ(Get(p->frees), 2u);
    EXPECT_EQ(Failures(p), 0u);
    EXPECT_TRUE(s.exited);
  }
  (void)t;
}

TEST_F(Lifecycle, VforkThenExecIsSafeAndTheChildImageHasItsOwnSegment) {
  RunResult r = Run({"vfork-exec"});
  ExpectParentAndChild(this, r, pid_, snaps_);
}

TEST_F(Lifecycle, PosixSpawnIsSafeAndTheChildHasItsOwnSegment) {
  RunResult r = Run({"spawn"});
  ExpectParentAndChild(this, r, pid_, snaps_);
}

// exec-chain 3: four images in one process (same pid, same start time). Each image's segment is
// kept: the earlier ones marked exited and moved aside, each counting its own one allocation.
TEST_F(Lifecycle, ExecChainKeepsOneSegmentPerImageEachMarkedExited) {
  RunResult r = Run({"exec-chain", "3"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  const auto mine = Of(pid_);
  ASSERT_EQ(mine.size(), 4u);
  ASSERT_EQ(snaps_.size(), 4u);
  int aside = 0;
  for (const Snapshot* s : mine) {
    const PoolStats* p = Huge(*s);
    ASSERT_NE(p, nullptr);
    EXPECT_EQ(Allocs(p), 1u) << s->file_name;
    EXPECT_EQ(Get(p->frees), 1u) << s->file_name;
    EXPECT_TRUE(s->exited) << s->file_name;
    EXPECT_EQ(s->start_time_ticks, mine[0]->start_time_ticks);
    aside += s->file_name.find(".exec") != std::string::npos;
  }
  EXPECT_EQ(aside, 3);
}

// SIGKILL while 4 threads allocate without pause: the segment is intact (it reads back, counts at
// least what the program reported, and its books are consistent), exported once more by the
// exporter, then reaped.
TEST_F(Lifecycle, SigkillMidAllocationLeavesAnIntactSegmentExportedOnceThenReaped) {
  RunSpec spec;
  spec.argv = {RprobePath(), "inflight", "4"};
  spec.preload = true;
  spec.config = dir_.Write("dmashim.toml", kPool);
  spec.run_dir = run_dir();
  Child child(spec);
  long reported = 0;
  for (int i = 0; i < 1000 && reported < 400; ++i) {
    const std::string line = child.ReadLine();
    ASSERT_FALSE(line.empty()) << "rprobe stopped reporting";
    if (line.rfind("cycles=", 0) == 0) reported = std::stol(line.substr(7));
  }
  ASSERT_EQ(kill(child.pid(), SIGKILL), 0);
  const pid_t pid = child.pid();
  RunResult r = child.Wait();
  EXPECT_EQ(r.exit_code, 128 + SIGKILL);

  snaps_ = Segments(run_dir());
  ASSERT_EQ(snaps_.size(), 1u) << "the killed program's segment must read back";
  const Snapshot& s = snaps_[0];
  EXPECT_EQ(s.pid, pid);
  EXPECT_FALSE(s.exited) << "nobody marked a SIGKILLed process as exited";
  const PoolStats* p = Huge(s);
  ASSERT_NE(p, nullptr);
  const uint64_t allocs = Allocs(p), frees = Get(p->frees);
  EXPECT_GE(allocs, static_cast<uint64_t>(reported));
  EXPECT_LE(frees, allocs);
  EXPECT_LE(allocs - frees, 4u) << "at most one element per thread was in flight";
  EXPECT_EQ(InUse(*p), static_cast<int64_t>(allocs - frees));
  EXPECT_EQ(Failures(p), 0u);

  // The exporter: the dead process is exported at the next scrape, then its file is reaped.
  CollectorOptions o;
  o.run_dir = run_dir();
  SegmentCollector collector(o);
  const std::string pid_label = "pid=\"" + std::to_string(pid) + "\"";
  const std::string first = SerializeText(collector.Collect());
  EXPECT_NE(first.find(pid_label), std::string::npos) << first;
  EXPECT_TRUE(std::filesystem::exists(run_dir() + "/" + s.file_name));
  const std::string second = SerializeText(collector.Collect());
  EXPECT_EQ(second.find(pid_label), std::string::npos) << second;
  EXPECT_FALSE(std::filesystem::exists(run_dir() + "/" + s.file_name)) << "not reaped";
}

}  // namespace
}  // namespace dmashim::testing
