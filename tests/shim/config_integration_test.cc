// DESIGN §3 items 7 and 8 with the real shim in a real program: a bad configuration never crashes
// the host (one clear line on stderr per problem, then pass-through) unless `strict = true`, where
// the process exits with that line; and a setuid program ignores every DMASHIM_* variable.
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "tests/common/hugepages.h"
#include "tests/shim/harness.h"

namespace dmashim::testing {
namespace {

struct BadConfig {
  const char* name;
  const char* text;
  int line;         // where the problem is
  const char* key;  // the key the message must name
};

// A pool table that is fine, followed by one mistake per case.
const BadConfig kBad[] = {
    {"syntax", "[pool.a]\nreserve = = 2\n", 2, "pool.a.reserve"},
    {"unknown_top_key", "strictt = true\n", 1, "strictt"},
    {"unknown_section", "[pools.a]\nreserve = 1\n", 1, "pools"},
    {"unknown_pool_key", "[pool.a]\nmatch = { call = \"mmap\", hugetlb = true }\nreserv = 1\n", 3,
     "pool.a.reserv"},
    {"wrong_type", "[pool.a]\nmatch = { call = \"mmap\", hugetlb = true }\nreserve = \"two\"\n", 3,
     "pool.a.reserve"},
    {"bad_mode", "[pool.a]\nmatch = { call = \"mmap\", hugetlb = true }\nmode = \"sometimes\"\n", 3,
     "pool.a.mode"},
    {"timeout_without_duration",
     "[pool.a]\nmatch = { call = \"mmap\", hugetlb = true }\nmode = \"timeout:\"\n", 3,
     "pool.a.mode"},
    {"negative_reserve", "[pool.a]\nmatch = { call = \"mmap\", hugetlb = true }\nreserve = -1\n",
     3, "pool.a.reserve"},
    {"reserve_above_max",
     "[pool.a]\nmatch = { call = \"mmap\", hugetlb = true }\nreserve = 9\nmax = 4\n", 3,
     "pool.a.reserve"},
    {"size_not_page_multiple",
     "[pool.a]\nmatch = { call = \"mmap\", hugetlb = true, size = \"3MiB\" }\n", 2,
     "pool.a.match.size"},
    {"bad_size_unit", "[pool.a]\nmatch = { call = \"mmap\", hugetlb = true, size = \"2MB\" }\n", 2,
     "pool.a.match.size"},
    {"bad_zero", "[pool.a]\nmatch = { call = \"mmap\", hugetlb = true }\nzero = \"lazy\"\n", 3,
     "pool.a.zero"},
    {"bad_prefault",
     "[pool.a]\nmatch = { call = \"mmap\", hugetlb = true }\nprefault = \"later\"\n", 3,
     "pool.a.prefault"},
    {"bad_share", "[pool.a]\nmatch = { call = \"mmap\", hugetlb = true, share = \"both\" }\n", 2,
     "pool.a.match.share"},
    {"bad_call", "[pool.a]\nmatch = { call = \"malloc\", hugetlb = true }\n", 2,
     "pool.a.match.call"},
    {"bad_bool", "[intercept]\nmmap = \"yes\"\n", 2, "intercept.mmap"},
    {"bad_duration",
     "[pool.a]\nmatch = { call = \"mmap\", hugetlb = true }\nretry_interval = \"soon\"\n", 3,
     "pool.a.retry_interval"},
};

std::vector<std::string> Lines(const std::string& s) {
  return absl::StrSplit(s, '\n', absl::SkipEmpty());
}

class BadConfigTest : public ::testing::TestWithParam<BadConfig> {
 protected:
  TempDir dir_;
};

TEST_P(BadConfigTest, HostRunsOnWithOneClearLine) {
  const BadConfig& c = GetParam();
  RunSpec spec;
  spec.argv = {ProbePath(), "plain"};
  const RunResult plain = RunProgram(spec);
  spec.preload = true;
  spec.config = dir_.Write("bad.toml", c.text);
  spec.run_dir = dir_.path() + "/run";
  const RunResult r = RunProgram(spec);
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_EQ(r.kv, plain.kv);  // the program's own behaviour is untouched
  const std::vector<std::string> lines = Lines(r.err);
  ASSERT_EQ(lines.size(), 1u) << r.err;
  const std::string prefix = "dmashim: " + spec.config + ":" + std::to_string(c.line) + ": " + c.key + ": expected ";
  EXPECT_TRUE(absl::StartsWith(lines[0], prefix)) << lines[0] << "\nwanted prefix: " << prefix;
  EXPECT_TRUE(absl::EndsWith(lines[0], "(configuration ignored: calls pass through)")) << lines[0];
  // Telemetry goes on: the process still has its segment, with the error counted.
  const auto snaps = Segments(spec.run_dir);
  ASSERT_EQ(snaps.size(), 1u);
  EXPECT_EQ(snaps[0].config_errors, 1u);
}

INSTANTIATE_TEST_SUITE_P(Matrix, BadConfigTest, ::testing::ValuesIn(kBad),
                         [](const auto& info) { return std::string(info.param.name); });

TEST(StrictConfigTest, ExitsWithTheLineLikeHugePagesOn) {
  TempDir dir;
  RunSpec spec;
  spec.argv = {ProbePath(), "plain"};
  spec.preload = true;
  spec.config = dir.Write("strict.toml",
                          "strict = true\n[pool.a]\nmatch = { call = \"mmap\", hugetlb = true }\n"
                          "mode = \"sometimes\"\n");
  spec.run_dir = dir.path() + "/run";
  const RunResult r = RunProgram(spec);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.out, "");  // main() never ran
  const std::vector<std::string> lines = Lines(r.err);
  ASSERT_EQ(lines.size(), 1u) << r.err;
  EXPECT_TRUE(absl::StartsWith(lines[0], "dmashim: " + spec.config + ":4: pool.a.mode: expected "))
      << lines[0];
  EXPECT_TRUE(absl::EndsWith(lines[0], "(strict = true: exiting)"));
}

TEST(StrictConfigTest, StartupPrefaultThatCannotBeHadRefusesToRun) {
  DMASHIM_REQUIRE_FREE_HUGE_PAGES(4);
  TempDir dir;
  HugePageHog hog;
  ASSERT_TRUE(hog.ok()) << hog.error();
  RunSpec spec;
  spec.argv = {ProbePath(), "plain"};
  spec.preload = true;
  spec.config = dir.Write("strict.toml",
                          "strict = true\n[pool.a]\nmatch = { call = \"mmap\", hugetlb = true }\n"
                          "reserve = 2\nprefault = \"startup\"\n");
  spec.run_dir = dir.path() + "/run";
  const RunResult r = RunProgram(spec);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.out, "");
  EXPECT_TRUE(absl::StrContains(r.err, "pool a: prefault = \"startup\" got 0 of 2")) << r.err;
}

const char kBiasPool[] =
    "[pool.a]\nmatch = { call = \"mmap\", hugetlb = true }\nreserve = 2\n"
    "prefault = \"startup\"\nzero = \"none\"\nmode = \"fail-fast\"\n";

// biased_locks: a thread that keeps hitting a pool gets its lock biased, and another thread's
// revocation uses membarrier(2) — unless the process is under a seccomp filter, which may kill it
// for that call: a filter there before the first bias, or installed after it (a sandbox set up in
// main(), after the shim's start-up), whether it kills or refuses. Every hit is served either way.
TEST(BiasedLocksTest, ASeccompFilterThatKillsForMembarrierNeverSeesIt) {
  DMASHIM_REQUIRE_FREE_HUGE_PAGES(4);
  TempDir dir;
  struct Case {
    const char* name;
    const char* action;
    const char* when;
  } cases[] = {
      {"kill_first", "kill", "first"},
      {"kill_late", "kill", "late"},
      {"errno_late", "errno", "late"},
  };
  for (const Case& c : cases) {
    RunSpec spec;
    spec.argv = {ProbePath(), "seccomp-membarrier", c.action, c.when};
    spec.preload = true;
    spec.config = dir.Write(std::string(c.name) + ".toml", kBiasPool);
    spec.run_dir = dir.path() + "/run-" + c.name;
    const RunResult r = RunProgram(spec);
    ASSERT_EQ(r.exit_code, 0) << c.name << ": " << r.out << r.err;
    EXPECT_EQ(r.kv.at("hits"), "860") << c.name << ": " << r.out;
    const auto snaps = Segments(spec.run_dir);
    ASSERT_EQ(snaps.size(), 1u) << c.name;
    const PoolStats* s = FindPool(snaps, snaps[0].pid, "a");
    ASSERT_NE(s, nullptr) << c.name;
    EXPECT_EQ(Get(s->alloc_reserve), 860u) << c.name << ": every hit served by the pool";
  }
}

// The same runs of hits without a filter, traced: by default the pool lock is biased (the process
// registers for membarrier and revokes with it); `biased_locks = false` makes no membarrier call.
TEST(BiasedLocksTest, BiasedLocksFalseMakesNoMembarrierCall) {
  DMASHIM_REQUIRE_FREE_HUGE_PAGES(4);
  TempDir dir;
  for (bool on : {true, false}) {
    const std::string name = on ? "on" : "off";
    const std::string trace = dir.path() + "/trace-" + name;
    RunSpec spec;
    spec.argv = {"/usr/bin/strace", "-f", "-qq", "-e", "trace=membarrier", "-o", trace,
                 ProbePath(), "seccomp-membarrier", "none", "first"};
    spec.preload = true;
    spec.config = dir.Write(name + ".toml", (on ? "" : "biased_locks = false\n") +
                                                std::string(kBiasPool));
    spec.run_dir = dir.path() + "/run-" + name;
    const RunResult r = RunProgram(spec);
    ASSERT_EQ(r.exit_code, 0) << name << ": " << r.out << r.err;
    EXPECT_EQ(r.kv.at("hits"), "860") << name;
    std::ifstream in(trace);
    ASSERT_TRUE(in.good()) << trace;
    int registers = 0, barriers = 0;
    for (std::string line; std::getline(in, line);) {
      if (absl::StrContains(line, "MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED")) ++registers;
      else if (absl::StrContains(line, "MEMBARRIER_CMD_PRIVATE_EXPEDITED")) ++barriers;
    }
    if (on) {
      EXPECT_EQ(registers, 1) << name;
      EXPECT_GE(barriers, 1) << name << ": no bias was ever revoked";
    } else {
      EXPECT_EQ(registers + barriers, 0) << name;
    }
  }
}

// DESIGN §8 / issue 6: a pool hit — the mmap of a 2 MiB huge page from a warm pool, its first
// touch, its munmap — makes no system call in the application's thread: no map or unmap, no clock,
// no barrier, no sleep. strace records every call of every thread; the probe marks each of its 20
// rounds of 4 hits with two getppid(2) calls and pauses 20 ms before each, 250 ms before the first
// (past the maintenance thread's first look at the pool). Meanwhile the maintenance thread zeroes
// the last round's elements: a hit takes ≈ 0.1 µs, zeroing 2 MiB ≈ 50 µs, so no loop of hits
// without pauses stays ahead of it. With zero = "none" nothing else touches the pool after that.
// With background zeroing the maintenance thread zeroes beside the round — its own calls are its
// thread's; it takes the pool's lock for elements freed while the pool had no clean ones — and the
// application thread may at most wait for that lock or kick the thread awake: a futex call, never
// anything else.
TEST(HitPathTest, APoolHitMakesNoSystemCallInTheApplicationsThread) {
  DMASHIM_REQUIRE_FREE_HUGE_PAGES(8);
  TempDir dir;
  constexpr int kRounds = 20, kPerRound = 4;
  for (const char* zero : {"none", "background"}) {
    SCOPED_TRACE(zero);
    const std::string trace = dir.path() + "/trace-" + zero;
    RunSpec spec;
    // The shim preloaded into the probe only (strace -E), not into strace.
    spec.argv = {"/usr/bin/strace", "-f", "-qq", "-o", trace, "-E", "LD_PRELOAD=" + ShimPath(),
                 ProbePath(), "quiet-hits", std::to_string(kRounds), std::to_string(kPerRound),
                 "20"};
    spec.config = dir.Write(std::string(zero) + ".toml",
                            absl::StrCat("[pool.a]\nmatch = { call = \"mmap\", hugetlb = true }\n"
                                         "reserve = 6\nprefault = \"startup\"\nzero = \"",
                                         zero, "\"\nmode = \"fail-fast\"\n"));
    spec.run_dir = dir.path() + "/run-" + zero;
    const RunResult r = RunProgram(spec);
    ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
    const int hits = 16 + kRounds * kPerRound;  // the warm-up's and the rounds'
    ASSERT_EQ(r.kv.at("hits"), std::to_string(hits)) << r.out;
    const std::string tid = r.kv.at("tid");
    const auto snaps = Segments(spec.run_dir);
    const PoolStats* s = FindPool(snaps, std::stoi(tid), "a");
    ASSERT_NE(s, nullptr);
    EXPECT_EQ(Get(s->alloc_reserve), static_cast<uint64_t>(hits)) << "every hit served by the pool";
    EXPECT_EQ(Get(s->source_calls), 6u) << "the prefault's maps, none since";
    // The application thread's calls inside the rounds.
    std::ifstream in(trace);
    ASSERT_TRUE(in.good()) << trace;
    int marks = 0;
    std::vector<std::string> inside;
    for (std::string line; std::getline(in, line);) {
      // A call another thread's interrupted shows in two lines: "<unfinished ...>", then
      // "<... name resumed>": counted once, by its first.
      if (!absl::StartsWith(line, tid + " ") || absl::StrContains(line, " resumed>")) continue;
      if (absl::StrContains(line, "getppid(")) {
        ++marks;
      } else if (marks % 2 == 1) {
        inside.push_back(line);
      }
    }
    ASSERT_EQ(marks, 2 * kRounds) << "the probe's marks are not all in the trace";
    if (std::string(zero) == "none") {
      EXPECT_TRUE(inside.empty()) << inside.size() << " calls, the first: " << inside[0];
    } else {
      for (const std::string& line : inside) EXPECT_TRUE(absl::StrContains(line, "futex(")) << line;
      EXPECT_LE(inside.size(), static_cast<size_t>(kRounds)) << "more than a wait or kick a round";
    }
  }
}

// AT_SECURE: a setuid-root program run by another user. ld.so then preloads only set-user-ID
// libraries from the system directories, named without a slash — so the test installs the shim
// there for the duration. The shim must load (its segment appears in the default run directory)
// and ignore DMASHIM_CONFIG and DMASHIM_RUN_DIR (a strict, broken configuration has no effect).
TEST(SetuidTest, IgnoresEveryDmashimVariable) {
  TempDir dir;
  const std::string lib = "/usr/lib/x86_64-linux-gnu/libdmashim-setuid-test.so";
  std::filesystem::copy_file(ShimPath(), lib, std::filesystem::copy_options::overwrite_existing);
  chmod(lib.c_str(), 04755);
  const std::string probe = dir.path() + "/probe-setuid";
  std::filesystem::copy_file(ProbePath(), probe);
  ASSERT_EQ(chown(probe.c_str(), 0, 0), 0);
  ASSERT_EQ(chmod(probe.c_str(), 04755), 0);

  RunSpec spec;
  spec.argv = {probe, "plain"};
  spec.uid = 65534;
  spec.env["LD_PRELOAD"] = "libdmashim-setuid-test.so";
  spec.config = dir.Write("strict.toml", "strict = true\nnot_a_key = 1\n");
  spec.run_dir = dir.path() + "/run";
  RunResult r = RunProgram(spec);
  std::filesystem::remove(lib);

  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.err, "");  // nothing about the variables, nowhere
  EXPECT_EQ(r.kv["unmap"], "0");
  EXPECT_FALSE(std::filesystem::exists(spec.run_dir));
  // It did load: its segment is in root's default run directory (the file is owned by euid 0).
  bool found = false;
  for (const Snapshot& s : Segments("/run/dmashim")) {
    if (s.comm == "probe-setuid") {
      found = true;
      EXPECT_EQ(s.config_errors, 0u);
    }
  }
  EXPECT_TRUE(found) << "the shim did not load into the setuid program";
}

}  // namespace
}  // namespace dmashim::testing
