// The opt-in C API (shim/dmashim.h): per-call flags, DMA blocks over a pool's pages, per-thread
// scopes — and the example program that resolves it with dlsym, run with and without the shim.
#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>
#include <sys/mman.h>

#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "shim/dmashim.h"
#include "tests/common/hugepages.h"
#include "tests/shim/harness.h"

namespace dmashim::testing {
namespace {

constexpr char kConfig[] = R"(
[pool.rx]
match    = { call = "mmap", hugetlb = true, size = "2MiB" }
reserve  = 1
prefault = "startup"
mode     = "block"
)";

TEST(CapiDemoTest, RunsWithAndWithoutTheShim) {
  DMASHIM_REQUIRE_FREE_HUGE_PAGES(8);
  TempDir dir;
  RunSpec spec;
  spec.argv = {DMASHIM_TEST_CAPI_DEMO_PATH, "rx"};
  const RunResult plain = RunProgram(spec);
  EXPECT_EQ(plain.exit_code, 0);
  EXPECT_TRUE(absl::StrContains(plain.out, "dmashim not loaded")) << plain.out;

  spec.preload = true;
  spec.config = dir.Write("dmashim.toml", kConfig);
  spec.run_dir = dir.path() + "/run";
  const RunResult r = RunProgram(spec);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(absl::StrContains(r.out, "capi_demo: element ok")) << r.out;
  EXPECT_TRUE(absl::StrContains(r.out, "capi_demo: 100 dma blocks ok")) << r.out;
  EXPECT_TRUE(absl::StrContains(r.out, "capi_demo: fail-fast scope mmap ok")) << r.out;
}

// The shim loaded into this test process with dlopen: its C API is usable (its hooks are not
// interposed here — the test's own mmap calls stay the kernel's).
class CapiTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir;
    setenv("DMASHIM_CONFIG", dir_->Write("dmashim.toml", kConfig).c_str(), 1);
    setenv("DMASHIM_RUN_DIR", (dir_->path() + "/run").c_str(), 1);
    EnsureFreeHugePages(8);
    handle_ = dlopen(ShimPath().c_str(), RTLD_NOW | RTLD_LOCAL);
  }
  // The shim stays loaded (and its pool mapped): only the scratch directory goes.
  static void TearDownTestSuite() {
    delete dir_;
    dir_ = nullptr;
  }
  void SetUp() override {
    DMASHIM_REQUIRE_FREE_HUGE_PAGES(8);
    ASSERT_NE(handle_, nullptr) << dlerror();
#define DMASHIM_BIND(f) f##_ = reinterpret_cast<decltype(&::f)>(dlsym(handle_, #f))
    DMASHIM_BIND(dmashim_pool_find);
    DMASHIM_BIND(dmashim_pool_alloc);
    DMASHIM_BIND(dmashim_pool_free);
    DMASHIM_BIND(dmashim_pool_element_size);
    DMASHIM_BIND(dmashim_dma_pool_create);
    DMASHIM_BIND(dmashim_dma_alloc);
    DMASHIM_BIND(dmashim_dma_free);
    DMASHIM_BIND(dmashim_dma_pool_destroy);
    DMASHIM_BIND(dmashim_scope_begin);
    DMASHIM_BIND(dmashim_scope_end);
#undef DMASHIM_BIND
    ASSERT_NE(dmashim_scope_end_, nullptr);
    pool_ = dmashim_pool_find_("rx");
    ASSERT_NE(pool_, nullptr);
  }

  static TempDir* dir_;
  static void* handle_;
  dmashim_pool* pool_ = nullptr;
  decltype(&dmashim_pool_find) dmashim_pool_find_;
  decltype(&dmashim_pool_alloc) dmashim_pool_alloc_;
  decltype(&dmashim_pool_free) dmashim_pool_free_;
  decltype(&dmashim_pool_element_size) dmashim_pool_element_size_;
  decltype(&dmashim_dma_pool_create) dmashim_dma_pool_create_;
  decltype(&dmashim_dma_alloc) dmashim_dma_alloc_;
  decltype(&dmashim_dma_free) dmashim_dma_free_;
  decltype(&dmashim_dma_pool_destroy) dmashim_dma_pool_destroy_;
  decltype(&dmashim_scope_begin) dmashim_scope_begin_;
  decltype(&dmashim_scope_end) dmashim_scope_end_;
};
TempDir* CapiTest::dir_ = nullptr;
void* CapiTest::handle_ = nullptr;

TEST_F(CapiTest, UnknownPoolIsEnoent) {
  errno = 0;
  EXPECT_EQ(dmashim_pool_find_("nope"), nullptr);
  EXPECT_EQ(errno, ENOENT);
}

TEST_F(CapiTest, PerCallFlagsDecideWhetherAnEmptyPoolWaits) {
  EXPECT_EQ(dmashim_pool_element_size_(pool_), size_t{2} << 20);
  void* a = dmashim_pool_alloc_(pool_, DMASHIM_WAIT, 0);  // the one reserve element
  ASSERT_NE(a, nullptr);
  HugePageHog hog;
  ASSERT_TRUE(hog.ok()) << hog.error();
  errno = 0;
  EXPECT_EQ(dmashim_pool_alloc_(pool_, DMASHIM_NOWAIT, 0), nullptr);
  EXPECT_EQ(errno, ENOMEM);
  errno = 0;
  EXPECT_EQ(dmashim_pool_alloc_(pool_, DMASHIM_TIMEOUT, 50'000'000), nullptr);
  EXPECT_EQ(errno, ENOMEM);
  EXPECT_EQ(dmashim_pool_alloc_(pool_, 0x7f, 0), nullptr);  // not a mode
  EXPECT_EQ(errno, EINVAL);
  EXPECT_EQ(dmashim_pool_alloc_(pool_, DMASHIM_TIMEOUT, 0), nullptr);  // timeout without a bound
  EXPECT_EQ(errno, EINVAL);
  ASSERT_EQ(dmashim_pool_free_(pool_, a), 0);
  void* b = dmashim_pool_alloc_(pool_, DMASHIM_NOWAIT, 0);  // the freed element, no system call
  EXPECT_EQ(b, a);
  EXPECT_EQ(dmashim_pool_free_(pool_, b), 0);
  EXPECT_EQ(dmashim_pool_free_(pool_, b), -1);  // double free is refused
  EXPECT_EQ(errno, EINVAL);
}

TEST_F(CapiTest, DmaBlocksHonourAlignAndBoundary) {
  dmashim_dma_pool* dma = dmashim_dma_pool_create_("capi-dma", pool_, 2048, 64, 4096);
  ASSERT_NE(dma, nullptr);
  std::vector<void*> blocks;
  for (int i = 0; i < 1024; ++i) {  // one 2 MiB page holds exactly 1024 blocks of 2 KiB
    void* b = dmashim_dma_alloc_(dma, DMASHIM_NOWAIT, 0);
    ASSERT_NE(b, nullptr) << i;
    const auto p = reinterpret_cast<uintptr_t>(b);
    EXPECT_EQ(p % 64, 0u);
    EXPECT_EQ(p / 4096, (p + 2047) / 4096);
    blocks.push_back(b);
  }
  for (void* b : blocks) EXPECT_EQ(dmashim_dma_free_(dma, b), 0);
  EXPECT_EQ(dmashim_dma_pool_create_("bad", pool_, 2048, 3, 0), nullptr);  // align not 2^n
  EXPECT_EQ(errno, EINVAL);
  dmashim_dma_pool_destroy_(dma);
}

TEST_F(CapiTest, ScopesNestAndRejectBadFlags) {
  EXPECT_EQ(dmashim_scope_begin_(DMASHIM_DEFAULT, 0), -1);
  EXPECT_EQ(errno, EINVAL);
  for (int i = 0; i < 16; ++i) ASSERT_EQ(dmashim_scope_begin_(DMASHIM_NOWAIT, 0), 0);
  EXPECT_EQ(dmashim_scope_begin_(DMASHIM_NOWAIT, 0), -1);
  EXPECT_EQ(errno, EOVERFLOW);
  for (int i = 0; i < 16; ++i) dmashim_scope_end_();
}

}  // namespace
}  // namespace dmashim::testing
