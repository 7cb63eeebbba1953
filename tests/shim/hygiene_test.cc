// Interposition hygiene (DESIGN §2): the shim must not change how a host program behaves in ways
// that have nothing to do with memory.
#include <sys/stat.h>

#include <filesystem>

#include "gtest/gtest.h"
#include "tests/shim/harness.h"

namespace dmashim::testing {
namespace {

// Found by the reliability work: with the maintenance thread started in every process, a root
// program that drops privileges with PR_SET_KEEPCAPS, setresuid, then setresgid (setpriv does)
// aborted — glibc runs each set*id call in every thread, and the extra thread had lost the
// capability the main thread kept. A process without pools has no extra thread.
TEST(HygieneTest, PrivilegeDroppingProgramRunsUnderTheShimWithoutPools) {
  if (!std::filesystem::exists("/usr/bin/setpriv")) GTEST_SKIP() << "setpriv (util-linux) missing";
  TempDir dir;
  RunSpec spec;
  spec.argv = {"/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
               "/bin/true"};
  spec.preload = true;
  spec.run_dir = dir.path() + "/run";
  const RunResult r = RunProgram(spec);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  // The shim did load: the program has a segment.
  EXPECT_EQ(Segments(spec.run_dir).size(), 1u);
}

}  // namespace
}  // namespace dmashim::testing
