// `dmashim run`: preloads the shim correctly (absolute path, an existing LD_PRELOAD kept), passes
// the program's exit status through, and its summary covers every process the run started.
#include <signal.h>

#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "tests/common/hugepages.h"
#include "tests/shim/harness.h"

namespace dmashim::testing {
namespace {

RunSpec Dmashim(std::vector<std::string> args) {
  RunSpec spec;
  spec.argv = {DMASHIM_TEST_CLI_PATH};
  spec.argv.insert(spec.argv.end(), args.begin(), args.end());
  return spec;
}

TEST(RunCommandTest, PassesTheExitStatusThrough) {
  TempDir dir;
  RunSpec spec = Dmashim({"run", "--", "/bin/sh", "-c", "exit 7"});
  spec.run_dir = dir.path() + "/run";
  EXPECT_EQ(RunProgram(spec).exit_code, 7);
  spec = Dmashim({"run", "--", "/bin/sh", "-c", "kill -TERM $$"});
  spec.run_dir = dir.path() + "/run";
  EXPECT_EQ(RunProgram(spec).exit_code, 128 + SIGTERM);
  spec = Dmashim({"run", "--", "/nonexistent/program"});
  EXPECT_EQ(RunProgram(spec).exit_code, 127);
}

TEST(RunCommandTest, PreloadsByAbsolutePathAndKeepsAnExistingPreload) {
  TempDir dir;
  RunSpec spec = Dmashim({"run", "--", "/bin/sh", "-c", "echo \"preload=$LD_PRELOAD\""});
  spec.run_dir = dir.path() + "/run";
  spec.env["LD_PRELOAD"] = "/lib/x86_64-linux-gnu/libSegFault.so";  // absent is fine for ld.so
  const RunResult r = RunProgram(spec);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string line = r.out.substr(0, r.out.find('\n'));
  const std::vector<std::string> parts = absl::StrSplit(line.substr(8), ':');
  ASSERT_EQ(parts.size(), 2u) << line;
  EXPECT_EQ(parts[0][0], '/');
  EXPECT_TRUE(absl::EndsWith(parts[0], "/libdmashim.so")) << parts[0];
  EXPECT_EQ(parts[1], "/lib/x86_64-linux-gnu/libSegFault.so");
}

TEST(RunCommandTest, SummaryCoversForkedChildren) {
  DMASHIM_REQUIRE_FREE_HUGE_PAGES(8);
  TempDir dir;
  const std::string config = dir.Write("dmashim.toml", R"(
[pool.shared]
match   = { call = "mmap", hugetlb = true, size = "2MiB", share = "shared" }
reserve = 2
mode    = "block"
)");
  RunSpec spec = Dmashim({"run", "--config", config, "--summary", "--", ProbePath(), "shared-fork"});
  spec.run_dir = dir.path() + "/run";
  const RunResult r = RunProgram(spec);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.kv.at("seen_first"), "66");
  // One block per process: the probe and the child it forked.
  size_t blocks = 0;
  for (absl::string_view l : absl::StrSplit(r.err, '\n')) {
    if (absl::StartsWith(l, "dmashim: pid ")) ++blocks;
  }
  EXPECT_EQ(blocks, 2u) << r.err;
  EXPECT_TRUE(absl::StrContains(r.err, "  shared ")) << r.err;
}

}  // namespace
}  // namespace dmashim::testing
