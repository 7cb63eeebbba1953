// The configuration as a specification (DESIGN §6, §3 items 7 and 8): what good files mean, how
// the environment overrides them, that setuid programs ignore the environment, and that every bad
// file costs exactly one line naming file, line and key.
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "shim/config.h"
#include "shim/config_keys.h"

namespace dmashim {
namespace {

using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::StartsWith;

constexpr size_t kMiB = size_t{1} << 20;

class FakeEnvironment : public Environment {
 public:
  FakeEnvironment(std::initializer_list<std::pair<const std::string, std::string>> vars)
      : vars_(vars) {}
  const char* Get(const char* name) const override {
    auto it = vars_.find(name);
    return it == vars_.end() ? nullptr : it->second.c_str();
  }
  std::vector<std::string> DmashimNames() const override {
    std::vector<std::string> names;
    for (const auto& [name, value] : vars_) {
      if (absl::StartsWith(name, "DMASHIM_")) names.push_back(name);
    }
    return names;
  }

 private:
  std::map<std::string, std::string> vars_;
};

// A file under the test's temp dir, removed at the end of the test.
class TempFile {
 public:
  TempFile(const std::string& name, const std::string& text)
      : path_(absl::StrCat(::testing::TempDir(), "/dmashim-", getpid(), "-", name)) {
    std::ofstream(path_) << text;
  }
  ~TempFile() { ::unlink(path_.c_str()); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

std::string ErrorsOf(const Config& c) { return absl::StrJoin(c.errors, "\n"); }

constexpr char kDesignSketch[] = R"(
[pool.rx-buffers]
match   = { call = "mmap", hugetlb = true, size = "2MiB" }   # also: caller = "librte_*.so"
reserve = 64          # elements held back, the guarantee
max     = 1024
mode    = "block"     # "block" | "fail-fast" | "timeout:50ms"
zero    = "background"

[pool.readahead]
match   = { call = "mmap", hugetlb = true, size = "2MiB", caller = "libreadahead.so" }
mode    = "fail-fast"
)";

TEST(ConfigParse, DesignSketchParsesToItsMeaningInFileOrder) {
  Config c = ParseConfig(kDesignSketch, "sketch.toml");
  ASSERT_THAT(c.errors, IsEmpty()) << ErrorsOf(c);
  ASSERT_EQ(c.pools.size(), 2u);

  const PoolConfig& rx = c.pools[0];  // file order, although "readahead" sorts first
  EXPECT_EQ(rx.name, "rx-buffers");
  EXPECT_EQ(rx.line, 2);
  EXPECT_EQ(rx.match.call, CallFamily::kMmap);
  EXPECT_EQ(rx.match.hugetlb, std::optional<bool>(true));
  EXPECT_EQ(rx.match.size, 2 * kMiB);
  EXPECT_EQ(rx.match.share, Share::kAny);
  EXPECT_EQ(rx.match.caller, "");
  EXPECT_EQ(rx.source, SourceKind::kHuge2M);
  EXPECT_EQ(rx.element_size, 2 * kMiB);
  EXPECT_EQ(rx.reserve, 64u);
  EXPECT_EQ(rx.max, 1024u);
  EXPECT_FALSE(rx.keep.has_value());
  EXPECT_EQ(rx.policy.mode, Mode::kBlock);
  EXPECT_FALSE(rx.policy.interruptible);
  EXPECT_EQ(rx.zero, ZeroMode::kBackground);
  EXPECT_EQ(rx.prefault, Prefault::kFirstUse);

  const PoolConfig& ra = c.pools[1];
  EXPECT_EQ(ra.name, "readahead");
  EXPECT_EQ(ra.line, 9);
  EXPECT_EQ(ra.match.caller, "libreadahead.so");
  EXPECT_EQ(ra.policy.mode, Mode::kFailFast);
  EXPECT_EQ(ra.reserve, 0u);
  EXPECT_EQ(ra.max, 0u);
  EXPECT_EQ(ra.element_size, 2 * kMiB);

  // Top level untouched: the defaults.
  EXPECT_FALSE(c.strict);
  EXPECT_TRUE(c.stats);
  EXPECT_EQ(c.default_policy.mode, Mode::kFailFast);
}

TEST(ConfigParse, EmptyFileIsPureTelemetry) {
  Config c = ParseConfig("", "empty.toml");
  EXPECT_THAT(c.errors, IsEmpty());
  EXPECT_THAT(c.pools, IsEmpty());
  EXPECT_FALSE(c.strict);
  EXPECT_TRUE(c.stats);
  EXPECT_EQ(c.run_dir, "");
  EXPECT_FALSE(c.count_passthrough);
  EXPECT_TRUE(c.biased_locks);
  EXPECT_TRUE(c.intercept_mmap && c.intercept_shm && c.intercept_mlock && c.intercept_cuda &&
              c.intercept_ibverbs);
  EXPECT_EQ(c.default_policy.mode, Mode::kFailFast);
}

TEST(ConfigParse, EveryKeyReachesItsField) {
  Config c = ParseConfig(R"(
strict = true
stats = false
run_dir = "/var/run/dmashim-test"
count_passthrough = true
biased_locks = false
default_mode = "timeout:2s"

[intercept]
mmap = false
shm = false
mlock = true
cuda = false
ibverbs = false

[pool.pinned]
match = { call = "cuda", size = "64KiB", share = "shared", caller = "libtorch*.so" }
reserve = 16
keep = 32
max = 64
mode = "timeout:50ms"
interruptible = true
zero = "none"
prefault = "startup"
retry_interval = "10ms"
retry_max = "200ms"
watchdog = "3s"

[pool.giant]
match = { call = "shm", hugetlb = true, size = "1GiB" }

[pool.bytes]
match = { call = "mmap", size = 4194304 }
)",
                         "all.toml");
  ASSERT_THAT(c.errors, IsEmpty()) << ErrorsOf(c);
  EXPECT_TRUE(c.strict);
  EXPECT_FALSE(c.stats);
  EXPECT_EQ(c.run_dir, "/var/run/dmashim-test");
  EXPECT_TRUE(c.count_passthrough);
  EXPECT_FALSE(c.biased_locks);
  EXPECT_EQ(c.default_policy.mode, Mode::kTimeout);
  EXPECT_EQ(c.default_policy.timeout, absl::Seconds(2));
  EXPECT_FALSE(c.intercept_mmap);
  EXPECT_FALSE(c.intercept_shm);
  EXPECT_TRUE(c.intercept_mlock);
  EXPECT_FALSE(c.intercept_cuda);
  EXPECT_FALSE(c.intercept_ibverbs);
  ASSERT_EQ(c.pools.size(), 3u);

  const PoolConfig& p = c.pools[0];
  EXPECT_EQ(p.match.call, CallFamily::kCuda);
  EXPECT_FALSE(p.match.hugetlb.has_value());
  EXPECT_EQ(p.match.share, Share::kShared);
  EXPECT_EQ(p.match.caller, "libtorch*.so");
  EXPECT_EQ(p.source, SourceKind::kPinned);
  EXPECT_EQ(p.element_size, 64u * 1024);
  EXPECT_EQ(p.reserve, 16u);
  EXPECT_EQ(p.keep, std::optional<size_t>(32));
  EXPECT_EQ(p.max, 64u);
  EXPECT_EQ(p.policy.mode, Mode::kTimeout);
  EXPECT_EQ(p.policy.timeout, absl::Milliseconds(50));
  EXPECT_TRUE(p.policy.interruptible);
  EXPECT_EQ(p.zero, ZeroMode::kNone);
  EXPECT_EQ(p.prefault, Prefault::kStartup);
  EXPECT_EQ(p.retry_interval, absl::Milliseconds(10));
  EXPECT_EQ(p.retry_max, absl::Milliseconds(200));
  EXPECT_EQ(p.watchdog, absl::Seconds(3));

  EXPECT_EQ(c.pools[1].source, SourceKind::kHuge1G);
  EXPECT_EQ(c.pools[1].element_size, size_t{1} << 30);
  EXPECT_EQ(c.pools[2].source, SourceKind::kHuge2M);  // integer bytes; hugetlb unset
  EXPECT_EQ(c.pools[2].element_size, 4 * kMiB);
}

TEST(ConfigParse, UnsetSizeIsOnePageOfTheSource) {
  Config c = ParseConfig("[pool.a]\nmatch = { call = \"mlock\" }\n[pool.b]\n", "t.toml");
  ASSERT_THAT(c.errors, IsEmpty()) << ErrorsOf(c);
  EXPECT_EQ(c.pools[0].source, SourceKind::kPinned);
  EXPECT_EQ(c.pools[0].element_size, 4096u);
  EXPECT_EQ(c.pools[1].match.call, CallFamily::kMmap);  // no match table: defaults
  EXPECT_EQ(c.pools[1].element_size, 2 * kMiB);
}

// The table's default texts are the defaults the code applies: writing every default explicitly
// gives the same Config as writing nothing.
TEST(ConfigKeyTable, DefaultTextsAreTheCodeDefaults) {
  std::string top, intercept, pool;
  for (const ConfigKey& key : kConfigKeys) {
    const std::string def = key.default_text;
    if (def.empty() || key.type == KeyType::kMatch || key.id == KeyId::kKeep) continue;
    std::string name = key.name;
    std::string* out = key.section == KeySection::kTop         ? &top
                       : key.section == KeySection::kIntercept ? &intercept
                                                               : &pool;
    if (absl::StartsWith(name, "match.")) continue;  // written below as one inline table
    absl::StrAppend(out, name, " = ", def, "\n");
  }
  std::string match = "match = { ";
  for (const ConfigKey& key : kConfigKeys) {
    if (absl::StartsWith(key.name, "match.") && key.default_text[0] != '\0') {
      absl::StrAppend(&match, std::string(key.name).substr(6), " = ", key.default_text, ", ");
    }
  }
  match.resize(match.size() - 2);
  match += " }\n";
  Config explicit_defaults = ParseConfig(
      absl::StrCat(top, "[intercept]\n", intercept, "[pool.p]\n", match, pool), "defaults.toml");
  Config implicit = ParseConfig("[pool.p]\n", "implicit.toml");
  ASSERT_THAT(explicit_defaults.errors, IsEmpty()) << ErrorsOf(explicit_defaults);
  ASSERT_THAT(implicit.errors, IsEmpty());
  EXPECT_EQ(explicit_defaults.strict, implicit.strict);
  EXPECT_EQ(explicit_defaults.stats, implicit.stats);
  EXPECT_EQ(explicit_defaults.run_dir, implicit.run_dir);
  EXPECT_EQ(explicit_defaults.count_passthrough, implicit.count_passthrough);
  EXPECT_EQ(explicit_defaults.biased_locks, implicit.biased_locks);
  EXPECT_EQ(explicit_defaults.default_policy.mode, implicit.default_policy.mode);
  EXPECT_EQ(explicit_defaults.intercept_mmap, implicit.intercept_mmap);
  EXPECT_EQ(explicit_defaults.intercept_ibverbs, implicit.intercept_ibverbs);
  const PoolConfig& e = explicit_defaults.pools.at(0);
  const PoolConfig& i = implicit.pools.at(0);
  EXPECT_EQ(e.match.call, i.match.call);
  EXPECT_EQ(e.match.share, i.match.share);
  EXPECT_EQ(e.reserve, i.reserve);
  EXPECT_EQ(e.max, i.max);
  EXPECT_EQ(e.policy.mode, i.policy.mode);
  EXPECT_EQ(e.policy.interruptible, i.policy.interruptible);
  EXPECT_EQ(e.zero, i.zero);
  EXPECT_EQ(e.prefault, i.prefault);
  EXPECT_EQ(e.retry_interval, i.retry_interval);
  EXPECT_EQ(e.retry_max, i.retry_max);
  EXPECT_EQ(e.watchdog, i.watchdog);
}

TEST(ConfigKeyTable, RowsAreInKeyIdOrderAndEnvNamesAreUnique) {
  std::vector<std::string> env_names;
  for (size_t i = 0; i < kNumConfigKeys; ++i) {
    EXPECT_EQ(static_cast<size_t>(kConfigKeys[i].id), i) << kConfigKeys[i].name;
    env_names.push_back(KeyEnvName(kConfigKeys[i], "p"));
  }
  std::sort(env_names.begin(), env_names.end());
  EXPECT_EQ(std::adjacent_find(env_names.begin(), env_names.end()), env_names.end());
}

// ---------------------------------------------------------------------------------------------
// The bad-configuration matrix: each file has one mistake and gets one line, naming it.

struct BadCase {
  const char* name;
  const char* toml;
  int line;
  const char* key;
  const char* says;  // part of the "expected …, got …" text
};

void PrintTo(const BadCase& c, std::ostream* os) { *os << c.name; }

class BadConfig : public ::testing::TestWithParam<BadCase> {};

TEST_P(BadConfig, GivesExactlyOneLineNamingFileLineAndKey) {
  const BadCase& bad = GetParam();
  Config c = ParseConfig(bad.toml, "bad.toml");
  ASSERT_EQ(c.errors.size(), 1u) << ErrorsOf(c);
  const std::string& line = c.errors[0];
  EXPECT_THAT(line, StartsWith(absl::StrCat("bad.toml:", bad.line, ": ", bad.key, ": expected ")));
  EXPECT_THAT(line, HasSubstr(", got "));
  EXPECT_THAT(line, HasSubstr(bad.says));
  EXPECT_EQ(line.find('\n'), std::string::npos);
}

INSTANTIATE_TEST_SUITE_P(
    Matrix, BadConfig,
    ::testing::Values(
        BadCase{"TomlSyntax", "[pool.rx]\nreserve = \n", 2, "pool.rx.reserve", "valid TOML"},
        BadCase{"TomlUnclosedHeader", "strict = true\n[pool.rx\n", 2, "pool.rx", "valid TOML"},
        BadCase{"DuplicateKey", "[pool.rx]\nreserve = 1\nreserve = 2\n", 3, "pool.rx.reserve",
                "cannot redefine"},
        BadCase{"DuplicatePool", "[pool.rx]\nmax = 1\n[pool.rx]\nmax = 2\n", 3, "pool.rx",
                "cannot redefine"},
        BadCase{"UnknownTopKey", "strict = true\nstrct = false\n", 2, "strct", "\"strct\""},
        BadCase{"UnknownPoolKey", "[pool.rx]\nreserve = 1\nreserv = 4\n", 3, "pool.rx.reserv",
                "reserve, keep, max"},
        BadCase{"UnknownMatchKey", "[pool.rx]\nmatch = { call = \"mmap\", sise = \"2MiB\" }\n", 2,
                "pool.rx.match.sise", "call, hugetlb, size, share, caller"},
        BadCase{"UnknownSection", "strict = true\n\n[pools.rx]\nreserve = 1\n", 3, "pools",
                "got [pools]"},
        BadCase{"UnknownInterceptKey", "[intercept]\nmalloc = false\n", 2, "intercept.malloc",
                "mmap, shm, mlock, cuda, ibverbs"},
        BadCase{"WrongTypeCount", "[pool.rx]\nreserve = \"64\"\n", 2, "pool.rx.reserve",
                "non-negative integer, got the string \"64\""},
        BadCase{"WrongTypeFloat", "[pool.rx]\n\nmax = 1.5\n", 3, "pool.rx.max", "the float 1.5"},
        BadCase{"WrongTypeBool", "stats = 1\n", 1, "stats", "true or false, got the integer 1"},
        BadCase{"WrongTypeIntercept", "[intercept]\nmmap = \"yes\"\n", 2, "intercept.mmap",
                "true or false"},
        BadCase{"InterceptNotATable", "intercept = false\n", 1, "intercept", "a table"},
        BadCase{"MatchNotATable", "[pool.rx]\nmatch = \"mmap\"\n", 2, "pool.rx.match", "a table"},
        BadCase{"BadMode", "[pool.rx]\nmode = \"sometimes\"\n", 2, "pool.rx.mode",
                "\"block\", \"fail-fast\" or \"timeout:<duration>\""},
        BadCase{"TimeoutWithoutDuration", "[pool.rx]\nmode = \"timeout:\"\n", 2, "pool.rx.mode",
                "positive duration"},
        BadCase{"BadDefaultMode", "default_mode = \"wait\"\n", 1, "default_mode", "\"wait\""},
        BadCase{"NegativeReserve", "[pool.rx]\nreserve = -1\n", 2, "pool.rx.reserve",
                "the integer -1"},
        BadCase{"ReserveAboveMax", "[pool.rx]\nmax = 4\nreserve = 8\n", 3, "pool.rx.reserve",
                "at most max = 4, got 8"},
        BadCase{"KeepAboveMax", "[pool.rx]\nmax = 4\nkeep = 5\n", 3, "pool.rx.keep",
                "at most max = 4, got 5"},
        BadCase{"SizeNotMultipleOfHugePage",
                "[pool.rx]\nmatch = { call = \"mmap\", hugetlb = true, size = \"3MiB\" }\n", 2,
                "pool.rx.match.size", "multiple of the 2MiB page size, got 3MiB"},
        BadCase{"SizeNotMultipleOfPinnedPage", "[pool.rx]\nmatch = { call = \"mlock\", size = 6000 }\n",
                2, "pool.rx.match.size", "multiple of the 4KiB page size, got 6000"},
        BadCase{"BadSizeUnit", "[pool.rx]\nmatch = { size = \"2MB\" }\n", 2, "pool.rx.match.size",
                "got \"2MB\""},
        BadCase{"ZeroSize", "[pool.rx]\nmatch = { size = 0 }\n", 2, "pool.rx.match.size",
                "the integer 0"},
        BadCase{"BadZero", "[pool.rx]\nzero = \"lazy\"\n", 2, "pool.rx.zero",
                "\"eager\", \"background\" or \"none\""},
        BadCase{"ControlCharactersAreEscaped", "[pool.rx]\nzero = \"la\\nzy\"\n", 2, "pool.rx.zero",
                "got \"la\\x0azy\""},
        BadCase{"BadPrefault", "[pool.rx]\nprefault = \"never\"\n", 2, "pool.rx.prefault",
                "\"first-use\" or \"startup\", got \"never\""},
        BadCase{"BadShare", "[pool.rx]\nmatch = { share = \"both\" }\n", 2, "pool.rx.match.share",
                "got \"both\""},
        BadCase{"BadCall", "[pool.rx]\nmatch = { call = \"malloc\" }\n", 2, "pool.rx.match.call",
                "got \"malloc\""},
        BadCase{"EmptyCaller", "[pool.rx]\nmatch = { caller = \"\" }\n", 2, "pool.rx.match.caller",
                "non-empty glob"},
        BadCase{"HugetlbFalse", "[pool.rx]\nmatch = { call = \"mmap\", hugetlb = false }\n", 2,
                "pool.rx.match.hugetlb", "got false"},
        BadCase{"HugetlbOnPinned", "[pool.rx]\nmatch = { call = \"mlock\", hugetlb = true }\n", 2,
                "pool.rx.match.hugetlb", "pinned"},
        BadCase{"BadDuration", "[pool.rx]\nwatchdog = \"10\"\n", 2, "pool.rx.watchdog",
                "positive duration such as"},
        BadCase{"RetryIntervalAboveMax", "[pool.rx]\nretry_interval = \"2s\"\n", 2,
                "pool.rx.retry_interval", "at most retry_max = 1s, got 2s"},
        BadCase{"RelativeRunDir", "run_dir = \"tmp/dmashim\"\n", 1, "run_dir", "absolute path"},
        BadCase{"UppercasePoolName", "[pool.RX]\nmax = 1\n", 1, "pool.RX", "lowercase letters"},
        BadCase{"PoolNamesSameInEnv", "[pool.rx-a]\nmax = 1\n[pool.rx_a]\nmax = 1\n", 3,
                "pool.rx_a", "DMASHIM_POOL_RX_A_*"},
        BadCase{"PoolNotATable", "[pool]\nrx = 3\n", 2, "pool.rx", "a table [pool.rx]"}),
    [](const ::testing::TestParamInfo<BadCase>& info) { return std::string(info.param.name); });

TEST(ConfigParse, SeveralMistakesGiveOneLineEachInFileOrder) {
  Config c = ParseConfig("[pool.b]\nzero = \"x\"\n[pool.a]\nmode = \"y\"\n", "two.toml");
  ASSERT_EQ(c.errors.size(), 2u) << ErrorsOf(c);
  EXPECT_THAT(c.errors[0], StartsWith("two.toml:2: pool.b.zero:"));
  EXPECT_THAT(c.errors[1], StartsWith("two.toml:4: pool.a.mode:"));
}

// A fuzz-like sweep: every prefix of a good file parses without throwing, and whatever it says
// is one line per error.
TEST(ConfigParse, TruncatedFilesNeverThrow) {
  const std::string text = kDesignSketch;
  for (size_t n = 0; n <= text.size(); ++n) {
    Config c = ParseConfig(text.substr(0, n), "cut.toml");
    for (const std::string& e : c.errors) {
      EXPECT_THAT(e, StartsWith("cut.toml:"));
      EXPECT_EQ(e.find('\n'), std::string::npos) << e;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Loading: files, the environment, secure mode.

constexpr char kNoDefault[] = "/nonexistent/dmashim/dmashim.toml";

TEST(ConfigLoad, MissingDefaultFileIsNoConfigurationAndNoError) {
  Config c = LoadConfigFrom(FakeEnvironment({}), false, kNoDefault);
  EXPECT_THAT(c.errors, IsEmpty());
  EXPECT_EQ(c.path, "");
  EXPECT_THAT(c.pools, IsEmpty());
}

TEST(ConfigLoad, MissingExplicitFileIsOneLineNamingIt) {
  Config c = LoadConfigFrom(FakeEnvironment({{"DMASHIM_CONFIG", "/nonexistent/my.toml"}}), false,
                            kNoDefault);
  ASSERT_EQ(c.errors.size(), 1u) << ErrorsOf(c);
  EXPECT_THAT(c.errors[0], StartsWith("/nonexistent/my.toml: DMASHIM_CONFIG: expected a readable "
                                      "file, got No such file or directory"));
}

TEST(ConfigLoad, ReadsTheDefaultFileAndReportsItsPathInMessages) {
  TempFile file("default.toml", "[pool.rx]\nzero = \"lazy\"\n");
  Config c = LoadConfigFrom(FakeEnvironment({}), false, file.path());
  EXPECT_EQ(c.path, file.path());
  ASSERT_EQ(c.errors.size(), 1u);
  EXPECT_THAT(c.errors[0], StartsWith(absl::StrCat(file.path(), ":2: pool.rx.zero: expected")));
}

TEST(ConfigLoad, EnvironmentOverridesSingleKeys) {
  TempFile file("sketch.toml", kDesignSketch);
  FakeEnvironment env({{"DMASHIM_CONFIG", file.path()},
                       {"DMASHIM_STRICT", "1"},
                       {"DMASHIM_INTERCEPT_MMAP", "0"},
                       {"DMASHIM_POOL_RX_BUFFERS_RESERVE", "8"},
                       {"DMASHIM_POOL_READAHEAD_MODE", "timeout:20ms"},
                       {"DMASHIM_POOL_READAHEAD_MATCH_SIZE", "4MiB"},
                       {"DMASHIM_RUN_DIR", "/tmp/dmashim-run"},
                       {"HOME", "/root"}});
  Config c = LoadConfigFrom(env, false, kNoDefault);
  ASSERT_THAT(c.errors, IsEmpty()) << ErrorsOf(c);
  EXPECT_EQ(c.path, file.path());
  EXPECT_TRUE(c.strict);
  EXPECT_FALSE(c.intercept_mmap);
  EXPECT_TRUE(c.intercept_shm);
  EXPECT_EQ(c.run_dir, "/tmp/dmashim-run");
  ASSERT_EQ(c.pools.size(), 2u);
  EXPECT_EQ(c.pools[0].reserve, 8u);
  EXPECT_EQ(c.pools[0].max, 1024u);  // the file's other keys stay
  EXPECT_EQ(c.pools[1].policy.mode, Mode::kTimeout);
  EXPECT_EQ(c.pools[1].policy.timeout, absl::Milliseconds(20));
  EXPECT_EQ(c.pools[1].element_size, 4 * kMiB);  // derived after the override
}

TEST(ConfigLoad, EnvironmentWorksWithoutAnyFile) {
  Config c = LoadConfigFrom(FakeEnvironment({{"DMASHIM_STATS", "off"}}), false, kNoDefault);
  ASSERT_THAT(c.errors, IsEmpty()) << ErrorsOf(c);
  EXPECT_FALSE(c.stats);
}

TEST(ConfigLoad, OverrideNamingNoKeyIsOneLineNamingTheVariable) {
  TempFile file("sketch.toml", kDesignSketch);
  Config c = LoadConfigFrom(FakeEnvironment({{"DMASHIM_CONFIG", file.path()},
                                             {"DMASHIM_POOL_RX_BUFFERS_RESERV", "8"}}),
                            false, kNoDefault);
  ASSERT_EQ(c.errors.size(), 1u) << ErrorsOf(c);
  EXPECT_THAT(c.errors[0], StartsWith("environment: DMASHIM_POOL_RX_BUFFERS_RESERV: expected "));
  EXPECT_THAT(c.errors[0], HasSubstr("pools: rx-buffers, readahead"));
  EXPECT_EQ(c.pools[0].reserve, 64u);
}

TEST(ConfigLoad, OverrideOfAnUnconfiguredPoolIsAnError) {
  Config c =
      LoadConfigFrom(FakeEnvironment({{"DMASHIM_POOL_TX_RESERVE", "8"}}), false, kNoDefault);
  ASSERT_EQ(c.errors.size(), 1u) << ErrorsOf(c);
  EXPECT_THAT(c.errors[0], HasSubstr("DMASHIM_POOL_TX_RESERVE: expected"));
  EXPECT_THAT(c.errors[0], HasSubstr("no pools are configured"));
}

TEST(ConfigLoad, BadOverrideValueNamesVariableAndKey) {
  Config c = LoadConfigFrom(FakeEnvironment({{"DMASHIM_STRICT", "maybe"}}), false, kNoDefault);
  ASSERT_EQ(c.errors.size(), 1u) << ErrorsOf(c);
  EXPECT_EQ(c.errors[0],
            "environment: DMASHIM_STRICT (strict): expected true or false, got \"maybe\"");
  EXPECT_FALSE(c.strict);
}

TEST(ConfigLoad, OverrideIsCheckedAgainstTheFile) {
  TempFile file("sketch.toml", kDesignSketch);
  Config c = LoadConfigFrom(FakeEnvironment({{"DMASHIM_CONFIG", file.path()},
                                             {"DMASHIM_POOL_RX_BUFFERS_RESERVE", "2000"}}),
                            false, kNoDefault);
  ASSERT_EQ(c.errors.size(), 1u) << ErrorsOf(c);
  EXPECT_EQ(c.errors[0],
            "environment: DMASHIM_POOL_RX_BUFFERS_RESERVE (pool.rx-buffers.reserve): expected at "
            "most max = 1024, got 2000");
}

TEST(ConfigLoad, GoodOverrideReplacesABadFileValue) {
  TempFile file("bad.toml", "[pool.rx]\nzero = \"lazy\"\nmax = 4\n");
  Config c = LoadConfigFrom(
      FakeEnvironment({{"DMASHIM_CONFIG", file.path()}, {"DMASHIM_POOL_RX_ZERO", "eager"}}), false,
      kNoDefault);
  // The file's line stays (the file is still wrong), but the pool ends up with the override.
  ASSERT_EQ(c.errors.size(), 1u) << ErrorsOf(c);
  EXPECT_EQ(c.pools.at(0).zero, ZeroMode::kEager);
}

TEST(ConfigLoad, SecureModeIgnoresTheEnvironmentEntirely) {
  if (geteuid() != 0) GTEST_SKIP() << "needs a root-owned file";
  TempFile trusted("trusted.toml", "[pool.rx]\nreserve = 2\n");
  ASSERT_EQ(::chmod(trusted.path().c_str(), 0644), 0);
  TempFile attacker("attacker.toml", "strict = true\n[pool.evil]\nreserve = 100000\n");
  FakeEnvironment env({{"DMASHIM_CONFIG", attacker.path()},
                       {"DMASHIM_STRICT", "1"},
                       {"DMASHIM_RUN_DIR", "/tmp/attacker"},
                       {"DMASHIM_POOL_RX_RESERVE", "9"},
                       {"DMASHIM_BOGUS", "1"}});
  Config c = LoadConfigFrom(env, true, trusted.path());
  ASSERT_THAT(c.errors, IsEmpty()) << ErrorsOf(c);  // not even the bogus variable is looked at
  EXPECT_EQ(c.path, trusted.path());
  EXPECT_FALSE(c.strict);
  EXPECT_EQ(c.run_dir, "");
  ASSERT_EQ(c.pools.size(), 1u);
  EXPECT_EQ(c.pools[0].name, "rx");
  EXPECT_EQ(c.pools[0].reserve, 2u);
}

TEST(ConfigLoad, SecureModeWithoutDefaultFileIgnoresDmashimConfig) {
  TempFile attacker("attacker.toml", "[pool.evil]\nreserve = 1\n");
  Config c = LoadConfigFrom(FakeEnvironment({{"DMASHIM_CONFIG", attacker.path()}}), true, kNoDefault);
  EXPECT_THAT(c.errors, IsEmpty());
  EXPECT_EQ(c.path, "");
  EXPECT_THAT(c.pools, IsEmpty());
}

TEST(ConfigLoad, SecureModeRefusesAWritableDefaultFile) {
  TempFile file("writable.toml", "[pool.rx]\nreserve = 2\n");
  ASSERT_EQ(::chmod(file.path().c_str(), 0666), 0);
  Config c = LoadConfigFrom(FakeEnvironment({}), true, file.path());
  ASSERT_EQ(c.errors.size(), 1u) << ErrorsOf(c);
  EXPECT_THAT(c.errors[0], StartsWith(absl::StrCat(file.path(), ": file: expected a file owned by "
                                                   "root and not writable by group or others")));
  EXPECT_THAT(c.errors[0], HasSubstr("mode 0666"));
  EXPECT_THAT(c.pools, IsEmpty());
}

TEST(ConfigLoad, SecureModeRefusesADefaultFileNotOwnedByRoot) {
  TempFile file("user.toml", "[pool.rx]\nreserve = 2\n");
  ASSERT_EQ(::chmod(file.path().c_str(), 0644), 0);
  if (geteuid() == 0) {
    ASSERT_EQ(::chown(file.path().c_str(), 65534, 65534), 0);
  }
  Config c = LoadConfigFrom(FakeEnvironment({}), true, file.path());
  ASSERT_EQ(c.errors.size(), 1u) << ErrorsOf(c);
  EXPECT_THAT(c.errors[0], HasSubstr("owned by root"));
  EXPECT_THAT(c.errors[0], HasSubstr(absl::StrCat("got owner uid ", geteuid() == 0 ? 65534u : geteuid())));
  EXPECT_THAT(c.pools, IsEmpty());
}

TEST(ConfigLoad, ProcessEnvironmentListsDmashimVariables) {
  ASSERT_EQ(::setenv("DMASHIM_TEST_PROBE", "x", 1), 0);
  const std::vector<std::string> names = ProcessEnvironment().DmashimNames();
  EXPECT_NE(std::find(names.begin(), names.end(), "DMASHIM_TEST_PROBE"), names.end());
  EXPECT_STREQ(ProcessEnvironment().Get("DMASHIM_TEST_PROBE"), "x");
  ::unsetenv("DMASHIM_TEST_PROBE");
}

// ---------------------------------------------------------------------------------------------

TEST(ConfigDocs, ReadmeKeyTableIsTheGeneratedOne) {
  std::ifstream in(DMASHIM_README);
  ASSERT_TRUE(in) << DMASHIM_README;
  std::stringstream buf;
  buf << in.rdbuf();
  const std::string text = buf.str();
  const std::string begin = "<!-- config-keys:begin -->\n", end = "<!-- config-keys:end -->";
  const size_t b = text.find(begin), e = text.find(end);
  ASSERT_NE(b, std::string::npos);
  ASSERT_NE(e, std::string::npos);
  ASSERT_LT(b, e);
  EXPECT_EQ(text.substr(b + begin.size(), e - b - begin.size()), RenderKeyTableMarkdown())
      << "README.md is stale: run `ninja config-doc` (dmashim-config-doc --update README.md)";
}

TEST(ConfigDocs, TableNamesEveryKeyAndItsVariable) {
  const std::string table = RenderKeyTableMarkdown();
  for (const ConfigKey& key : kConfigKeys) {
    EXPECT_THAT(table, HasSubstr(absl::StrCat("`", KeyPath(key), "`")));
  }
  EXPECT_THAT(table, HasSubstr("`DMASHIM_POOL_<NAME>_RESERVE`"));
  EXPECT_THAT(table, HasSubstr("`DMASHIM_INTERCEPT_MMAP`"));
}

}  // namespace
}  // namespace dmashim
