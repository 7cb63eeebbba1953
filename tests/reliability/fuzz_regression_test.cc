// Regressions from the fuzzers (issue 7 item 6: every crash found becomes a test), run in the normal
// build without clang.
//
// fuzz_config found that a pool name of 48..64 characters passed the parser (which allowed 64)
// while the pool's stats record holds 47 (kPoolNameMax with its NUL): Mempool::Create refused the
// pool, so a configuration with no error line silently ran without that pool.
#include <dirent.h>

#include <fstream>
#include <sstream>
#include <string>

#include "gtest/gtest.h"
#include "pools/mempool.h"
#include "pools/stats.h"
#include "shim/config.h"

namespace dmashim::testing {
namespace {

std::string PoolWithName(const std::string& name) {
  return "[pool." + name + "]\nmatch = { call = \"mmap\", hugetlb = true }\nreserve = 1\n";
}

TEST(FuzzRegression, PoolNameTooLongForTheStatsRecordIsAConfigurationError) {
  const std::string name48(48, 'n');
  Config c = ParseConfig(PoolWithName(name48), "t.toml");
  ASSERT_EQ(c.errors.size(), 1u);
  EXPECT_NE(c.errors[0].find("pool." + name48), std::string::npos) << c.errors[0];
  EXPECT_NE(c.errors[0].find("1 to 47"), std::string::npos) << c.errors[0];

  // The longest accepted name is one a pool takes.
  const std::string name47(47, 'n');
  c = ParseConfig(PoolWithName(name47), "t.toml");
  ASSERT_TRUE(c.errors.empty()) << c.errors[0];
  ASSERT_EQ(c.pools.size(), 1u);
  MempoolOptions o;
  o.name = c.pools[0].name;
  o.source = SourceSpec{c.pools[0].source, false};
  o.element_size = c.pools[0].element_size;
  o.reserve = c.pools[0].reserve;
  EXPECT_TRUE(Mempool::Create(o).ok());
}

// Every checked-in config seed (the fuzzer's crash inputs are among them) either fails with one
// line per problem or yields pools that Mempool::Create accepts.
TEST(FuzzRegression, EveryConfigSeedIsRefusedInOneLineOrMakesValidPools) {
  const std::string dir = std::string(DMASHIM_FUZZ_CORPUS) + "/config";
  DIR* d = opendir(dir.c_str());
  ASSERT_NE(d, nullptr) << dir;
  int files = 0;
  while (dirent* e = readdir(d)) {
    if (e->d_name[0] == '.') continue;
    std::ifstream in(dir + "/" + e->d_name, std::ios::binary);
    std::stringstream buf;
    buf << in.rdbuf();
    std::string text = buf.str();
    text = text.substr(0, text.find('\0'));  // the part after a NUL is the fuzzer's environment
    const Config c = ParseConfig(text, e->d_name);
    ++files;
    for (const std::string& line : c.errors) {
      EXPECT_EQ(line.find('\n'), std::string::npos) << e->d_name << ": " << line;
    }
    if (!c.errors.empty()) continue;
    for (const PoolConfig& p : c.pools) {
      MempoolOptions o;
      o.name = p.name;
      o.source = SourceSpec{p.source, p.match.share == Share::kShared};
      o.element_size = p.element_size;
      o.reserve = p.reserve;
      o.max = p.max;
      o.keep = p.keep;
      o.policy = p.policy;
      o.retry_interval = p.retry_interval;
      o.retry_max = p.retry_max;
      auto pool = Mempool::Create(o);
      EXPECT_TRUE(pool.ok()) << e->d_name << ": pool " << p.name << ": " << pool.status();
    }
  }
  closedir(d);
  EXPECT_GE(files, 8);
}

}  // namespace
}  // namespace dmashim::testing
