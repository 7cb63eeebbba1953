// The run directory under a real program (issue 7, item 8). tests/exporter covers
// StatsSegment::Create refusing a run dir that is a symlink, foreign-owned or world-writable; here
// the real shim in rprobe meets files planted under the very names it is about to create (a
// symlink at its segment's name and at its temporary name, a file of another user), a symlinked
// run dir, and leaves 0600 files in a 0700 directory. In every case the program itself runs on
// unharmed, and nothing is written through the planted path.
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "exporter/segment_reader.h"
#include "gtest/gtest.h"
#include "tests/reliability/rutil.h"

namespace dmashim::testing {
namespace {

constexpr uid_t kNobody = 65534;

std::string Slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// Forks rprobe `alloc 1` under the shim, stopped before exec; `plant(pid, start_ticks)` runs
// before it is let go. Returns the exit status.
template <typename Plant>
int RunWithPlant(const std::string& config, const std::string& run_dir, Plant plant) {
  int go[2];
  if (pipe(go) != 0) return -1;
  const pid_t pid = fork();
  if (pid == 0) {
    close(go[1]);
    char c;
    if (read(go[0], &c, 1) != 1) _exit(125);
    int devnull = open("/dev/null", O_WRONLY);
    dup2(devnull, 1);
    setenv("LD_PRELOAD", ShimPath().c_str(), 1);
    setenv("DMASHIM_CONFIG", config.c_str(), 1);
    setenv("DMASHIM_RUN_DIR", run_dir.c_str(), 1);
    const std::string probe = RprobePath();
    execl(probe.c_str(), probe.c_str(), "alloc", "1", nullptr);
    _exit(127);
  }
  close(go[0]);
  const uint64_t start = ParseStartTime(Slurp("/proc/" + std::to_string(pid) + "/stat"));
  plant(pid, start);
  if (write(go[1], "g", 1) != 1) perror("write");
  close(go[1]);
  int st = 0;
  waitpid(pid, &st, 0);
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

class RunDir : public ::testing::Test {
 protected:
  void SetUp() override {
    DMASHIM_REQUIRE_FREE_HUGE_PAGES(4);
    config_ = dir_.Write("dmashim.toml", R"(
[pool.huge]
match = { call = "mmap", hugetlb = true, size = "2MiB" }
reserve = 1
)");
    run_ = dir_.path() + "/run";
    ASSERT_EQ(mkdir(run_.c_str(), 0700), 0);
    victim_ = dir_.Write("victim", "do not overwrite me\n");
  }
  TempDir dir_;
  std::string config_, run_, victim_;
};

TEST_F(RunDir, SymlinksPlantedAtTheSegmentsNamesAreNotFollowed) {
  std::string seg, tmp;
  const int rc = RunWithPlant(config_, run_, [&](pid_t pid, uint64_t start) {
    const std::string base = std::to_string(pid) + "." + std::to_string(start);
    seg = run_ + "/" + base + ".seg";
    tmp = run_ + "/." + base + ".tmp";
    ASSERT_EQ(symlink(victim_.c_str(), seg.c_str()), 0);
    ASSERT_EQ(symlink(victim_.c_str(), tmp.c_str()), 0);
  });
  EXPECT_EQ(rc, 0) << "the program must run on without its segment";
  EXPECT_EQ(Slurp(victim_), "do not overwrite me\n");
  struct stat st;
  ASSERT_EQ(lstat(seg.c_str(), &st), 0);
  EXPECT_TRUE(S_ISLNK(st.st_mode)) << "the planted link was replaced";
  ASSERT_EQ(lstat(tmp.c_str(), &st), 0);
  EXPECT_TRUE(S_ISLNK(st.st_mode));
  EXPECT_EQ(Segments(run_).size(), 0u);
}

TEST_F(RunDir, SymlinkAtTheFinalNameOnlyIsRefusedToo) {
  std::string seg;
  const int rc = RunWithPlant(config_, run_, [&](pid_t pid, uint64_t start) {
    seg = run_ + "/" + std::to_string(pid) + "." + std::to_string(start) + ".seg";
    ASSERT_EQ(symlink(victim_.c_str(), seg.c_str()), 0);
  });
  EXPECT_EQ(rc, 0);
  EXPECT_EQ(Slurp(victim_), "do not overwrite me\n");
  struct stat st;
  ASSERT_EQ(lstat(seg.c_str(), &st), 0);
  EXPECT_TRUE(S_ISLNK(st.st_mode));
  // No hidden temporary file is left behind either.
  for (const auto& e : std::filesystem::directory_iterator(run_)) {
    EXPECT_EQ(e.path().string(), seg) << "left behind: " << e.path();
  }
}

TEST_F(RunDir, AForeignOwnedFileAtTheSegmentsNameIsNeitherWrittenNorMoved) {
  std::string seg;
  const std::string planted(sizeof(SegmentFile), 'x');  // even the right size
  const int rc = RunWithPlant(config_, run_, [&](pid_t pid, uint64_t start) {
    seg = run_ + "/" + std::to_string(pid) + "." + std::to_string(start) + ".seg";
    std::ofstream(seg, std::ios::binary) << planted;
    ASSERT_EQ(chown(seg.c_str(), kNobody, kNobody), 0);
    ASSERT_EQ(chmod(seg.c_str(), 0600), 0);
  });
  EXPECT_EQ(rc, 0);
  struct stat st;
  ASSERT_EQ(stat(seg.c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, kNobody);
  EXPECT_EQ(Slurp(seg), planted) << "the shim wrote into another user's file";
  // Only the planted file is there: nothing moved aside, no temporary left.
  int entries = 0;
  for (const auto& e : std::filesystem::directory_iterator(run_)) {
    (void)e;
    ++entries;
  }
  EXPECT_EQ(entries, 1);
}

TEST_F(RunDir, SegmentsAre0600InA0700DirectoryTheShimCreates) {
  const std::string fresh = dir_.path() + "/fresh";
  RunSpec spec;
  spec.argv = {RprobePath(), "alloc", "1"};
  spec.preload = true;
  spec.config = config_;
  spec.run_dir = fresh;
  RunResult r = RunProgram(spec);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  struct stat st;
  ASSERT_EQ(lstat(fresh.c_str(), &st), 0);
  EXPECT_TRUE(S_ISDIR(st.st_mode));
  EXPECT_EQ(st.st_mode & 07777, 0700u);
  int segs = 0;
  for (const auto& e : std::filesystem::directory_iterator(fresh)) {
    ASSERT_EQ(lstat(e.path().c_str(), &st), 0);
    EXPECT_TRUE(S_ISREG(st.st_mode)) << e.path();
    EXPECT_EQ(st.st_mode & 07777, 0600u) << e.path();
    EXPECT_EQ(st.st_uid, geteuid());
    EXPECT_EQ(st.st_nlink, 1u);
    ++segs;
  }
  EXPECT_EQ(segs, 1);
}

TEST_F(RunDir, ASymlinkedRunDirIsRefusedAndTheProgramRunsOn) {
  const std::string link = dir_.path() + "/link";
  ASSERT_EQ(symlink(run_.c_str(), link.c_str()), 0);
  RunSpec spec;
  spec.argv = {RprobePath(), "alloc", "2"};
  spec.preload = true;
  spec.config = config_;
  spec.run_dir = link;
  RunResult r = RunProgram(spec);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.kv["ok"], "2");
  EXPECT_TRUE(std::filesystem::is_empty(run_)) << "a segment was written through the link";
}

}  // namespace
}  // namespace dmashim::testing
