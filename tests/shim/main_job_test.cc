// The main job (scripts/demo.sh): the RX-ring workload under `dmashim run` while a hog takes every
// free huge page. No RX allocation fails, and the summary's read-ahead failures are exactly the
// ones the program itself saw.
#include <regex>

#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "tests/common/hugepages.h"
#include "tests/shim/harness.h"

namespace dmashim::testing {
namespace {

TEST(MainJobTest, RxRingUnderTheShimLosesNoRxBufferAndCountsReadAheadFailures) {
  DMASHIM_REQUIRE_FREE_HUGE_PAGES(64);
  TempDir dir;
  RunSpec spec;
  spec.argv = {DMASHIM_TEST_CLI_PATH,
               "run",
               "--config",
               std::string(DMASHIM_TEST_SOURCE_DIR) + "/examples/rx_ring.toml",
               "--summary",
               "--",
               DMASHIM_TEST_RX_RING_PATH,
               "--seconds",
               "2",
               "--hog",
               DMASHIM_TEST_HOG_PATH};
  spec.run_dir = dir.path() + "/run";
  const RunResult r = RunProgram(spec);
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;

  std::smatch m;
  ASSERT_TRUE(std::regex_search(r.out, m, std::regex(
      R"(rx buffers (\d+), rx failed (\d+), rx not zero-filled (\d+); read-ahead (\d+), read-ahead failed (\d+))")))
      << r.out;
  EXPECT_GT(std::stol(m[1]), 100);
  EXPECT_EQ(m[2], "0");
  EXPECT_EQ(m[3], "0");
  const std::string ra_failed = m[5];
  EXPECT_NE(ra_failed, "0") << "the hog should have made some read-ahead fail";
  EXPECT_TRUE(absl::StrContains(r.err, "hugepage_hog: took")) << r.err;

  // The summary's row for the read-ahead pool: its fail-fast column equals what the program saw.
  ASSERT_TRUE(std::regex_search(r.err, m, std::regex(R"(\n  readahead +\d+ +\d+ +\d+ \| +(\d+) )")))
      << r.err;
  EXPECT_EQ(m[1], ra_failed);
  ASSERT_TRUE(std::regex_search(r.err, m, std::regex(R"(\n  rx-buffers +\d+ +(\d+) +\d+ \| +(\d+) +(\d+))")))
      << r.err;
  EXPECT_GT(std::stol(m[1]), 100);  // served from the reserve
  EXPECT_EQ(m[2], "0");             // no fail-fast
  EXPECT_EQ(m[3], "0");             // no timeout
}

}  // namespace
}  // namespace dmashim::testing
