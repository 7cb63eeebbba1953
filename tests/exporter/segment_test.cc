// The stats segment end to end inside one test process: what the writer (shim side) records is what
// the reader (exporter side) sees, the writer's run-directory rules hold, and fork / exec / control
// requests behave as shim/stats_segment.h promises.
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <string>

#include "exporter/segment_reader.h"
#include "gtest/gtest.h"
#include "pools/sys.h"
#include "shim/stats_segment.h"
#include "tests/exporter/test_util.h"

namespace dmashim {
namespace {

using testing::TempDir;

absl::StatusOr<Snapshot> ReadAt(const std::string& dir, const std::string& path) {
  int dirfd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  std::string name = path.substr(path.rfind('/') + 1);
  auto snap = ReadSegment(dirfd, name, geteuid());
  close(dirfd);
  return snap;
}

uint64_t OwnStartTime() {
  return ParseStartTime(testing::ReadFile("/proc/self/stat"));
}

TEST(StatsSegment, WhatTheWriterRecordsIsWhatTheReaderReads) {
  TempDir dir;
  StatsSegment seg;
  ASSERT_EQ(StatsSegment::Create(dir.path().c_str(), &seg), 0);
  std::string expected_name =
      std::to_string(getpid()) + "." + std::to_string(OwnStartTime()) + ".seg";
  EXPECT_EQ(std::string(seg.path()), dir / expected_name);
  struct stat st;
  ASSERT_EQ(lstat(seg.path(), &st), 0);
  EXPECT_TRUE(S_ISREG(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_EQ(static_cast<size_t>(st.st_size), sizeof(SegmentFile));

  PoolStats* rx = seg.AddPool("rx-buffers", PoolKind::kMempool, 0, 2u << 20);
  PoolStats* dma = seg.AddPool("small-dma", PoolKind::kDmaPool, 2, 2048);
  ASSERT_NE(rx, nullptr);
  ASSERT_NE(dma, nullptr);
  EXPECT_EQ(seg.PoolIndex(dma), 1);
  rx->alloc_source = 3;
  rx->alloc_reserve = 5;
  rx->fail_timeout = 4;
  rx->reserve_target = 64;
  rx->high_water = 17;
  RecordWait(rx, 2'000'000);
  dma->dma_active_blocks = 9;
  for (int i = 0; i < 7; ++i) seg.CountPassthrough(PassCall::kMmap);
  seg.CountPassthrough(PassCall::kFallocate);
  seg.AddConfigErrors(2);
  seg.SetHookState(HookFamily::kShm, HookState::kFiring);
  seg.SetHookState(HookFamily::kCuda, HookState::kNotFiring);
  uintptr_t pcs[] = {0x1000, 0x2000, 0x3000};
  seg.RecordSite(0, pcs, 3, 500, false);
  seg.RecordSite(0, pcs, 3, 700, true);
  seg.RecordSite(1, pcs, 1, 0, true);

  auto snap = ReadAt(dir.path(), seg.path());
  ASSERT_TRUE(snap.ok()) << snap.status();
  EXPECT_EQ(snap->pid, getpid());
  EXPECT_EQ(snap->uid, geteuid());
  EXPECT_EQ(snap->start_time_ticks, OwnStartTime());
  EXPECT_EQ(snap->comm, testing::OwnComm());
  EXPECT_NE(snap->exe.find("dmashim_exporter_test"), std::string::npos) << snap->exe;
  EXPECT_FALSE(snap->exited);
  EXPECT_TRUE(ProcessAlive(snap->pid, snap->start_time_ticks));
  ASSERT_EQ(snap->pools.size(), 2u);
  EXPECT_STREQ(snap->pools[0]->name, "rx-buffers");
  EXPECT_EQ(snap->pools[0]->element_size, 2u << 20);
  EXPECT_EQ(snap->pools[0]->alloc_source.load(), 3u);
  EXPECT_EQ(snap->pools[0]->alloc_reserve.load(), 5u);
  EXPECT_EQ(snap->pools[0]->fail_timeout.load(), 4u);
  EXPECT_EQ(snap->pools[0]->reserve_target.load(), 64);
  EXPECT_EQ(snap->pools[0]->wait_buckets[WaitBucketFor(2'000'000)].load(), 1u);
  EXPECT_EQ(snap->pools[0]->wait_sum_ns.load(), 2'000'000u);
  EXPECT_EQ(snap->pools[1]->kind, static_cast<uint32_t>(PoolKind::kDmaPool));
  EXPECT_EQ(snap->pools[1]->dma_active_blocks.load(), 9);
  EXPECT_EQ(snap->passthrough[static_cast<size_t>(PassCall::kMmap)], 7u);
  EXPECT_EQ(snap->passthrough[static_cast<size_t>(PassCall::kFallocate)], 1u);
  EXPECT_EQ(snap->config_errors, 2u);
  EXPECT_EQ(snap->hooks[static_cast<size_t>(HookFamily::kShm)], HookState::kFiring);
  EXPECT_EQ(snap->hooks[static_cast<size_t>(HookFamily::kCuda)], HookState::kNotFiring);
  EXPECT_EQ(snap->hooks[static_cast<size_t>(HookFamily::kMmap)], HookState::kUnknown);
  ASSERT_EQ(snap->sites.size(), 2u);
  for (const SiteSnapshot& site : snap->sites) {
    if (site.pool_index == 0) {
      EXPECT_EQ(site.pcs, (std::vector<uint64_t>{0x1000, 0x2000, 0x3000}));
      EXPECT_EQ(site.count, 2u);
      EXPECT_EQ(site.wait_ns, 1200u);
      EXPECT_EQ(site.failures, 1u);
    } else {
      EXPECT_EQ(site.pcs, (std::vector<uint64_t>{0x1000}));
      EXPECT_EQ(site.failures, 1u);
    }
  }

  seg.MarkExited();
  snap = ReadAt(dir.path(), seg.path());
  ASSERT_TRUE(snap.ok());
  EXPECT_TRUE(snap->exited);
  EXPECT_GT(snap->exit_unix_ns, 0u);
  seg.Close();
}

TEST(StatsSegment, PoolAndSiteTablesAreBounded) {
  TempDir dir;
  StatsSegment seg;
  ASSERT_EQ(StatsSegment::Create(dir.path().c_str(), &seg), 0);
  for (uint32_t i = 0; i < kSegmentPoolCapacity; ++i)
    ASSERT_NE(seg.AddPool(("p" + std::to_string(i)).c_str(), PoolKind::kMempool, 0, 4096), nullptr);
  EXPECT_EQ(seg.AddPool("one-too-many", PoolKind::kMempool, 0, 4096), nullptr);
  for (uintptr_t i = 0; i < kSegmentSiteCapacity + 10; ++i) seg.RecordSite(0, &i, 1, 1, false);
  EXPECT_EQ(seg.file()->counters.sites_dropped.load(), 10u);
  auto snap = ReadAt(dir.path(), seg.path());
  ASSERT_TRUE(snap.ok()) << snap.status();
  EXPECT_EQ(snap->pools.size(), kSegmentPoolCapacity);
  EXPECT_EQ(snap->sites.size(), kSegmentSiteCapacity);
  seg.Close();
}

TEST(StatsSegment, RunDirThatIsASymlinkOrNotOursIsRefused) {
  TempDir dir;
  ASSERT_EQ(mkdir((dir / "real").c_str(), 0700), 0);
  ASSERT_EQ(symlink((dir / "real").c_str(), (dir / "link").c_str()), 0);
  StatsSegment seg;
  int err = StatsSegment::Create((dir / "link").c_str(), &seg);
  EXPECT_TRUE(err == ELOOP || err == ENOTDIR) << err;
  EXPECT_FALSE(seg.valid());

  ASSERT_EQ(mkdir((dir / "foreign").c_str(), 0700), 0);
  ASSERT_EQ(chown((dir / "foreign").c_str(), 65534, 65534), 0);
  EXPECT_EQ(StatsSegment::Create((dir / "foreign").c_str(), &seg), EPERM);

  ASSERT_EQ(mkdir((dir / "open").c_str(), 0700), 0);
  ASSERT_EQ(chmod((dir / "open").c_str(), 0777), 0);
  EXPECT_EQ(StatsSegment::Create((dir / "open").c_str(), &seg), EPERM);

  // A missing last component is created 0700.
  ASSERT_EQ(StatsSegment::Create((dir / "fresh").c_str(), &seg), 0);
  struct stat st;
  ASSERT_EQ(stat((dir / "fresh").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  seg.Close();
}

TEST(StatsSegment, SecondSegmentOfTheSameProcessMarksTheOldOneExited) {
  // What an exec under the shim does: same pid and start time, a new image creating its segment.
  TempDir dir;
  StatsSegment before, after;
  ASSERT_EQ(StatsSegment::Create(dir.path().c_str(), &before), 0);
  std::string path = before.path();
  before.AddPool("old", PoolKind::kMempool, 0, 4096);
  before.Close();
  ASSERT_EQ(StatsSegment::Create(dir.path().c_str(), &after), 0);
  EXPECT_EQ(std::string(after.path()), path);
  int segs = 0;
  int dirfd = open(dir.path().c_str(), O_RDONLY | O_DIRECTORY);
  DIR* d = fdopendir(dirfd);
  while (dirent* e = readdir(d)) {
    std::string name = e->d_name;
    if (name.size() < 4 || name.compare(name.size() - 4, 4, ".seg") != 0) continue;
    ++segs;
    auto snap = ReadSegment(dirfd, name, geteuid());
    ASSERT_TRUE(snap.ok()) << snap.status();
    bool is_new = dir / name == path;
    EXPECT_EQ(snap->exited, !is_new) << name;
    EXPECT_EQ(snap->pools.size(), is_new ? 0u : 1u) << name;
  }
  closedir(d);
  EXPECT_EQ(segs, 2);
  after.Close();
}

TEST(StatsSegment, ForkedChildGetsItsOwnSegmentAtTheSameAddress) {
  TempDir dir;
  StatsSegment seg;
  ASSERT_EQ(StatsSegment::Create(dir.path().c_str(), &seg), 0);
  PoolStats* rx = seg.AddPool("rx", PoolKind::kMempool, 0, 2u << 20);
  rx->alloc_source = 3;
  rx->reserve_target = 8;
  rx->blocked_now = 2;
  seg.CountPassthrough(PassCall::kMunmap);
  std::string parent_path = seg.path();

  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  pid_t child = fork();
  if (child == 0) {
    int rc = seg.CreateForChild();
    rx->alloc_source.fetch_add(1);  // the pool's pointer, unchanged: must now be the child's
    std::string p = rc == 0 ? std::string(seg.path()) : "error " + std::to_string(rc);
    ssize_t w = write(fds[1], p.data(), p.size());
    _exit(w > 0 ? 0 : 1);
  }
  close(fds[1]);
  char buf[512] = {};
  ssize_t n = read(fds[0], buf, sizeof buf - 1);
  close(fds[0]);
  int status = 0;
  waitpid(child, &status, 0);
  ASSERT_GT(n, 0);
  std::string child_path(buf);
  ASSERT_NE(child_path, parent_path) << child_path;

  auto c = ReadAt(dir.path(), child_path);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->pid, child);
  ASSERT_EQ(c->pools.size(), 1u);
  EXPECT_STREQ(c->pools[0]->name, "rx");
  EXPECT_EQ(c->pools[0]->alloc_source.load(), 1u);   // counters restart at zero
  EXPECT_EQ(c->pools[0]->reserve_target.load(), 8);  // gauges carried over
  EXPECT_EQ(c->pools[0]->blocked_now.load(), 0);     // the waiters stayed in the parent
  EXPECT_EQ(c->passthrough[static_cast<size_t>(PassCall::kMunmap)], 0u);
  EXPECT_FALSE(ProcessAlive(c->pid, c->start_time_ticks));

  auto p = ReadAt(dir.path(), parent_path);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->pools[0]->alloc_source.load(), 3u);
  EXPECT_EQ(rx->alloc_source.load(), 3u);
  seg.Close();
}

TEST(StatsSegment, ControlRequestIsAppliedOnceAndAnswered) {
  TempDir dir;
  StatsSegment seg;
  ASSERT_EQ(StatsSegment::Create(dir.path().c_str(), &seg), 0);
  EXPECT_FALSE(seg.PollControl([](ControlCommand, const char*, int64_t) {
    ADD_FAILURE() << "no request pending";
    return ControlResult{};
  }));
  // What `dmashim ctl PID resize rx 10` writes.
  SegmentControl& c = seg.file()->control;
  uint32_t none = 0;
  ASSERT_TRUE(c.requester.compare_exchange_strong(none, 4242));
  c.command = static_cast<uint32_t>(ControlCommand::kResize);
  memset(c.pool, 'x', sizeof c.pool);  // unterminated: the poller must terminate its copy
  memcpy(c.pool, "rx", 3);
  c.value = 10;
  c.request_seq.fetch_add(1, std::memory_order_release);

  int calls = 0;
  auto apply = [&](ControlCommand cmd, const char* pool, int64_t value) {
    ++calls;
    EXPECT_EQ(cmd, ControlCommand::kResize);
    EXPECT_STREQ(pool, "rx");
    EXPECT_EQ(value, 10);
    return ControlResult{EAGAIN, 7};  // a partial grow
  };
  EXPECT_TRUE(seg.PollControl(apply));
  EXPECT_FALSE(seg.PollControl(apply));
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(c.response_seq.load(), 1u);
  EXPECT_EQ(c.status.load(), EAGAIN);
  EXPECT_EQ(c.result_reserve.load(), 7);
  seg.Close();
}

// The exporter's scrape reads without the call-site table, into one buffer it passes back each time.
TEST(SegmentReader, WithoutSitesReadsThePoolsIntoTheBufferItIsGiven) {
  TempDir dir;
  StatsSegment seg;
  ASSERT_EQ(StatsSegment::Create(dir.path().c_str(), &seg), 0);
  PoolStats* rx = seg.AddPool("rx", PoolKind::kMempool, 0, 4096);
  rx->alloc_waited = 41;
  uintptr_t pcs[] = {0x1000};
  seg.RecordSite(0, pcs, 1, 500, false);
  const std::string name = std::string(seg.path()).substr(dir.path().size() + 1);
  int dirfd = open(dir.path().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);

  auto buffer = std::make_shared<SegmentFile>();
  SegmentFile* storage = buffer.get();
  auto snap = ReadSegment(dirfd, name, geteuid(), {.sites = false, .reuse = std::move(buffer)});
  ASSERT_TRUE(snap.ok()) << snap.status();
  EXPECT_EQ(snap->data.get(), storage);
  ASSERT_EQ(snap->pools.size(), 1u);
  EXPECT_STREQ(snap->pools[0]->name, "rx");
  EXPECT_EQ(snap->pools[0]->alloc_waited.load(), 41u);
  EXPECT_TRUE(snap->sites.empty());

  // A buffer someone else still holds is left alone.
  std::shared_ptr<SegmentFile> held = snap->data;
  auto second = ReadSegment(dirfd, name, geteuid(), {.sites = false, .reuse = held});
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_NE(second->data.get(), storage);
  auto full = ReadSegment(dirfd, name, geteuid());
  ASSERT_TRUE(full.ok());
  EXPECT_EQ(full->sites.size(), 1u);
  close(dirfd);
}

TEST(SegmentReader, ReusedPidWithAnotherStartTimeIsDead) {
  uint64_t start = OwnStartTime();
  ASSERT_GT(start, 0u);
  EXPECT_TRUE(ProcessAlive(getpid(), start));
  EXPECT_FALSE(ProcessAlive(getpid(), start + 1));
  EXPECT_FALSE(ProcessAlive(0, start));
}

TEST(SegmentReader, StartTimeParsingSurvivesHostileComm) {
  std::string fields;
  for (int f = 3; f <= 21; ++f) fields += " " + std::to_string(f);
  EXPECT_EQ(ParseStartTime("12 (a) (b c) d)" + fields + " 98765 23 24"), 98765u);
  EXPECT_EQ(ParseStartTime("12 (no closing paren 1 2 3"), 0u);
  EXPECT_EQ(ParseStartTime("12 (short) R 1 2"), 0u);
  EXPECT_EQ(ParseStartTime("12 (x)  " + fields + "   98765 "), 98765u);  // runs of spaces
  EXPECT_EQ(ParseStartTime("12 (x)" + fields + " 98765x 23"), 0u);
}

}  // namespace
}  // namespace dmashim
