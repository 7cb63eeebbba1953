// dmashim-exporter as operators run it: the real binary (--once) over a run directory holding
// real segments and hostile files, its text checked by value and by `promtool check metrics`;
// and the collector in-process for the dead-process lifecycle (exported once more, then reaped).
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <string>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "exporter/collector.h"
#include "exporter/segment_reader.h"
#include "gtest/gtest.h"
#include "pools/sys.h"
#include "shim/stats_segment.h"
#include "tests/common/net.h"
#include "tests/exporter/test_util.h"

namespace dmashim {
namespace {

using testing::Sample;
using testing::TempDir;

constexpr char kExporter[] = DMASHIM_EXPORTER_BIN;
constexpr uid_t kNobody = 65534;

std::string Labels(const std::string& pool, const std::string& extra = "") {
  std::string l = "{comm=\"" + testing::OwnComm() + "\",pid=\"" + std::to_string(getpid()) + "\"";
  if (!pool.empty()) l += ",pool=\"" + pool + "\"";
  if (!extra.empty()) l += "," + extra;
  return l + "}";
}

std::string Errors(const std::string& reason) {
  return "dmashim_exporter_segment_errors_total{reason=\"" + reason + "\"}";
}

// A live segment (this test process) with known values in one pool.
void FillKnownValues(StatsSegment& seg) {
  PoolStats* rx = seg.AddPool("rx", PoolKind::kMempool, 0, 2u << 20);
  rx->alloc_source = 3;
  rx->alloc_reserve = 5;
  rx->alloc_waited = 2;
  rx->fail_fast = 1;
  rx->fail_timeout = 4;
  rx->frees = 6;
  RecordWait(rx, 2'000'000);      // ≤ 5 ms bucket
  RecordWait(rx, 40'000'000'000);  // beyond the last bound: +Inf only
  rx->blocked_now = 1;
  rx->waiter_start_ns[3] = MonotonicNs() - 3'000'000'000;
  rx->reserve_target = 64;
  rx->reserve_level = 60;
  rx->in_use = 4;
  rx->bytes_in_use = 4 * (2 << 20);
  rx->requested_bytes_in_use = 4 * (2 << 20) - 1000;
  rx->high_water = 9;
  rx->source_calls = 7;
  rx->source_ns = 1'500'000'000;
  for (int i = 0; i < 11; ++i) seg.CountPassthrough(PassCall::kShmget);
  seg.SetHookState(HookFamily::kMmap, HookState::kFiring);
}

class ExporterBinary : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(StatsSegment::Create(dir_.path().c_str(), &seg_), 0);
    FillKnownValues(seg_);
  }
  void TearDown() override { seg_.Close(); }

  std::string Scrape(std::vector<std::string> extra = {}) {
    std::vector<std::string> argv = {kExporter, "--once", "--run-dir", dir_.path()};
    argv.insert(argv.end(), extra.begin(), extra.end());
    auto r = testing::Run(argv);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return r.out;
  }

  void ExpectPromtoolClean(const std::string& text) {
    auto r = testing::Run({"/usr/bin/promtool", "check", "metrics"}, text);
    EXPECT_EQ(r.exit_code, 0) << r.out << r.err << "\n---\n" << text;
  }

  std::string SegmentBytes() { return testing::ReadFile(seg_.path()); }

  TempDir dir_;
  StatsSegment seg_;
};

TEST_F(ExporterBinary, ExportsWhatThePoolRecorded) {
  std::string text = Scrape();
  EXPECT_EQ(Sample(text, "dmashim_allocations_total" + Labels("rx", "result=\"source\"")), 3);
  EXPECT_EQ(Sample(text, "dmashim_allocations_total" + Labels("rx", "result=\"reserve\"")), 5);
  EXPECT_EQ(Sample(text, "dmashim_allocations_total" + Labels("rx", "result=\"waited\"")), 2);
  EXPECT_EQ(Sample(text, "dmashim_failures_total" + Labels("rx", "reason=\"fail_fast\"")), 1);
  EXPECT_EQ(Sample(text, "dmashim_failures_total" + Labels("rx", "reason=\"timeout\"")), 4);
  EXPECT_EQ(Sample(text, "dmashim_failures_total" + Labels("rx", "reason=\"interrupted\"")), 0);
  EXPECT_EQ(Sample(text, "dmashim_frees_total" + Labels("rx")), 6);
  // Histogram: cumulative, count == +Inf bucket, seconds.
  EXPECT_EQ(Sample(text, "dmashim_wait_seconds_bucket" + Labels("rx", "le=\"0.001\"")), 0);
  EXPECT_EQ(Sample(text, "dmashim_wait_seconds_bucket" + Labels("rx", "le=\"0.005\"")), 1);
  EXPECT_EQ(Sample(text, "dmashim_wait_seconds_bucket" + Labels("rx", "le=\"30\"")), 1);
  EXPECT_EQ(Sample(text, "dmashim_wait_seconds_bucket" + Labels("rx", "le=\"+Inf\"")), 2);
  EXPECT_EQ(Sample(text, "dmashim_wait_seconds_count" + Labels("rx")), 2);
  EXPECT_NEAR(*Sample(text, "dmashim_wait_seconds_sum" + Labels("rx")), 40.002, 1e-9);
  EXPECT_EQ(Sample(text, "dmashim_blocked_threads" + Labels("rx")), 1);
  double longest = *Sample(text, "dmashim_longest_wait_seconds" + Labels("rx"));
  EXPECT_GE(longest, 3.0);
  EXPECT_LT(longest, 60.0);
  EXPECT_EQ(Sample(text, "dmashim_reserve_target_elements" + Labels("rx")), 64);
  EXPECT_EQ(Sample(text, "dmashim_reserve_elements" + Labels("rx")), 60);
  EXPECT_EQ(Sample(text, "dmashim_in_use_bytes" + Labels("rx")), 4 * (2 << 20));
  EXPECT_EQ(Sample(text, "dmashim_rounding_waste_bytes" + Labels("rx")), 1000);
  EXPECT_EQ(Sample(text, "dmashim_high_water_elements" + Labels("rx")), 9);
  EXPECT_EQ(Sample(text, "dmashim_source_seconds_total" + Labels("rx")), 1.5);
  EXPECT_EQ(Sample(text, "dmashim_passthrough_calls_total" + Labels("", "call=\"shmget\"")), 11);
  EXPECT_EQ(Sample(text, "dmashim_hooks_firing" + Labels("", "family=\"mmap\"")), 1);
  EXPECT_EQ(Sample(text, "dmashim_process_alive" + Labels("")), 1);
  EXPECT_EQ(Sample(text, "dmashim_exporter_segments"), 1);
  EXPECT_NE(text.find("dmashim_process_info{comm=\"" + testing::OwnComm()), std::string::npos);
  EXPECT_TRUE(Sample(text, "dmashim_node_hugepages_free{size=\"2MiB\"}").has_value()) << text;
  ExpectPromtoolClean(text);
}

TEST_F(ExporterBinary, NoPidLabelDropsThePid) {
  std::string text = Scrape({"--no-pid-label"});
  std::string series = "dmashim_allocations_total{comm=\"" + testing::OwnComm() +
                       "\",pool=\"rx\",result=\"source\"}";
  EXPECT_EQ(Sample(text, series), 3) << text;
  EXPECT_EQ(text.find("pid=\""), std::string::npos);
  ExpectPromtoolClean(text);
}

// One HTTP/1.0 exchange with 127.0.0.1:port: the whole response, or "" when nothing answers.
std::string HttpExchange(int port, const std::string& method, const std::string& path) {
  int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::string resp;
  if (connect(s, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) {
    const std::string req = method + " " + path + " HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
    if (write(s, req.data(), req.size()) == static_cast<ssize_t>(req.size())) {
      char buf[65536];
      for (ssize_t n; (n = read(s, buf, sizeof buf)) > 0;) resp.append(buf, static_cast<size_t>(n));
    }
  }
  close(s);
  return resp;
}

std::string Header(const std::string& resp, const std::string& name) {
  const size_t at = resp.find("\r\n" + name + ": ");
  if (at == std::string::npos || at > resp.find("\r\n\r\n")) return "";
  const size_t from = at + name.size() + 4;
  return resp.substr(from, resp.find("\r\n", from) - from);
}

TEST_F(ExporterBinary, ServesTheSameTextOverHttpWithTypeAndLength) {
  const int port = testing::FreePort();
  const std::string listen = absl::StrCat("127.0.0.1:", port);
  pid_t exporter = fork();
  if (exporter == 0) {
    execl(kExporter, kExporter, "--listen", listen.c_str(), "--run-dir", dir_.path().c_str(),
          static_cast<char*>(nullptr));
    _exit(127);
  }
  struct Stop {  // also when an assertion returns early
    pid_t pid;
    ~Stop() {
      if (pid > 0) kill(pid, SIGKILL), waitpid(pid, nullptr, 0);
    }
  } stop{exporter};
  std::string resp;
  for (int i = 0; i < 500 && resp.empty(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    resp = HttpExchange(port, "GET", "/metrics");
  }
  ASSERT_TRUE(absl::StartsWith(resp, "HTTP/1.0 200 OK\r\n")) << resp;
  EXPECT_EQ(Header(resp, "Content-Type"), "text/plain; version=0.0.4; charset=utf-8");
  const std::string body = resp.substr(resp.find("\r\n\r\n") + 4);
  size_t length = 0;
  ASSERT_TRUE(absl::SimpleAtoi(Header(resp, "Content-Length"), &length)) << resp;
  EXPECT_EQ(length, body.size());
  EXPECT_EQ(Sample(body, "dmashim_allocations_total" + Labels("rx", "result=\"source\"")), 3);
  EXPECT_EQ(Sample(body, "dmashim_exporter_segments"), 1);
  // The endpoint's own metrics come first, as the Exposer's handler served them.
  EXPECT_TRUE(absl::StartsWith(body, "# HELP exposer_transferred_bytes_total ")) << body;
  ExpectPromtoolClean(body.substr(body.find("# HELP dmashim_")));

  const std::string again = HttpExchange(port, "GET", "/metrics?from=test");
  EXPECT_EQ(Sample(again, "exposer_scrapes_total"), 1) << again;
  EXPECT_EQ(Sample(again, "exposer_transferred_bytes_total"), static_cast<double>(length));
  for (const auto& [method, path] : std::vector<std::pair<std::string, std::string>>{
           {"GET", "/"}, {"GET", "/metricsx"}, {"HEAD", "/metrics"}, {"POST", "/metrics"}}) {
    const std::string r = HttpExchange(port, method, path);
    EXPECT_TRUE(absl::StartsWith(r, "HTTP/1.0 404")) << method << " " << path << ": " << r;
  }
  kill(exporter, SIGTERM);
  int status = 0;
  waitpid(exporter, &status, 0);
  stop.pid = 0;
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
}

TEST_F(ExporterBinary, HostileFilesAreSkippedCountedAndTheRestServed) {
  const std::string good = SegmentBytes();
  std::string bytes = good;
  bytes.resize(100);
  testing::WriteFile(dir_ / "truncated.seg", bytes);
  bytes = good;
  testing::Poke<uint64_t>(bytes, offsetof(SegmentFile, header.magic), 0xdeadbeef);
  testing::WriteFile(dir_ / "magic.seg", bytes);
  bytes = good;
  testing::Poke<uint32_t>(bytes, offsetof(SegmentFile, header.version), kSegmentVersion + 1);
  testing::WriteFile(dir_ / "version.seg", bytes);
  bytes = good;
  testing::Poke<uint32_t>(bytes, offsetof(SegmentFile, pool_count), 1'000'000);
  testing::WriteFile(dir_ / "pools.seg", bytes);
  bytes = good;
  testing::Poke<uint32_t>(bytes, offsetof(SegmentFile, pools[0].kind), 77);
  testing::WriteFile(dir_ / "kind.seg", bytes);
  testing::WriteFile(dir_ / "large.seg", good + "trailing");
  // A copy handed to another user: its recorded writer (root) is not its owner.
  testing::WriteFile(dir_ / "chowned.seg", good);
  ASSERT_EQ(chown((dir_ / "chowned.seg").c_str(), kNobody, kNobody), 0);
  ASSERT_EQ(symlink(seg_.path(), (dir_ / "planted.seg").c_str()), 0);
  ASSERT_EQ(mkdir((dir_ / "dir.seg").c_str(), 0700), 0);
  ASSERT_EQ(mkfifo((dir_ / "fifo.seg").c_str(), 0600), 0);  // must not hang the scrape
  testing::WriteFile(dir_ / ".half-written.tmp", "x");       // ignored: not a segment name

  std::string text = Scrape();
  EXPECT_EQ(Sample(text, Errors("truncated")), 1) << text;
  EXPECT_EQ(Sample(text, Errors("bad_magic")), 1);
  EXPECT_EQ(Sample(text, Errors("bad_version")), 1);
  EXPECT_EQ(Sample(text, Errors("bad_pool_count")), 1);
  EXPECT_EQ(Sample(text, Errors("bad_pool")), 1);
  EXPECT_EQ(Sample(text, Errors("too_large")), 1);
  EXPECT_EQ(Sample(text, Errors("uid_mismatch")), 1);
  EXPECT_EQ(Sample(text, Errors("symlink")), 1);
  EXPECT_EQ(Sample(text, Errors("not_regular")), 2);
  EXPECT_EQ(Sample(text, "dmashim_exporter_segments"), 1);
  EXPECT_EQ(Sample(text, "dmashim_allocations_total" + Labels("rx", "result=\"source\"")), 3);
  ExpectPromtoolClean(text);
  // Hostile files are not the exporter's to delete.
  EXPECT_TRUE(std::filesystem::exists(dir_ / "magic.seg"));
}

TEST_F(ExporterBinary, NonRootExporterRefusesSegmentsOfOtherUsers) {
  // The exporter runs as nobody over a run dir of nobody's, holding nobody's own segment (written
  // by a child that became nobody) and one of root's.
  TempDir bin;
  ASSERT_EQ(chmod(bin.path().c_str(), 0755), 0);
  std::filesystem::copy_file(kExporter, bin / "dmashim-exporter");
  TempDir run;
  ASSERT_EQ(chown(run.path().c_str(), kNobody, kNobody), 0);
  pid_t child = fork();
  if (child == 0) {
    StatsSegment theirs;
    if (setresgid(kNobody, kNobody, kNobody) != 0 || setresuid(kNobody, kNobody, kNobody) != 0)
      _exit(1);
    if (StatsSegment::Create(run.path().c_str(), &theirs) != 0) _exit(2);
    theirs.AddPool("nobodys", PoolKind::kMempool, 0, 4096)->alloc_source = 12;
    _exit(0);
  }
  int status = 0;
  waitpid(child, &status, 0);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  testing::WriteFile(run / "roots.seg", SegmentBytes());

  auto r = testing::Run({bin / "dmashim-exporter", "--once", "--run-dir", run.path()}, "", kNobody);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(Sample(r.out, Errors("foreign_owner")), 1) << r.out;
  EXPECT_EQ(Sample(r.out, "dmashim_exporter_segments"), 1);
  EXPECT_NE(r.out.find("pool=\"nobodys\",result=\"source\"} 12"), std::string::npos) << r.out;
}

TEST(ExporterCollector, DeadProcessIsExportedOnceMoreThenReaped) {
  TempDir dir;
  pid_t child = fork();
  if (child == 0) {
    StatsSegment seg;
    if (StatsSegment::Create(dir.path().c_str(), &seg) != 0) _exit(2);
    seg.AddPool("crashy", PoolKind::kMempool, 0, 4096)->alloc_waited = 5;
    _exit(0);  // no MarkExited: a crash, as far as the segment can tell
  }
  int status = 0;
  waitpid(child, &status, 0);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);

  SegmentCollector collector({.run_dir = dir.path(), .reader_euid = geteuid()});
  std::string series = "dmashim_allocations_total{comm=\"" + testing::OwnComm() + "\",pid=\"" +
                       std::to_string(child) + "\",pool=\"crashy\",result=\"waited\"}";
  std::string first = SerializeText(collector.Collect());
  EXPECT_EQ(Sample(first, series), 5) << first;
  EXPECT_EQ(Sample(first, "dmashim_process_alive{comm=\"" + testing::OwnComm() + "\",pid=\"" +
                              std::to_string(child) + "\"}"),
            0);
  EXPECT_EQ(Sample(first, "dmashim_exporter_segments_reaped_total"), 0);

  std::string second = SerializeText(collector.Collect());
  EXPECT_FALSE(Sample(second, series).has_value());
  EXPECT_EQ(Sample(second, "dmashim_exporter_segments_reaped_total"), 1);
  EXPECT_EQ(Sample(second, "dmashim_exporter_segments"), 0);
  EXPECT_TRUE(std::filesystem::is_empty(dir.path()));
}

TEST(ExporterCollector, NormalExitCountsAsDeadWhileALiveOneStays) {
  TempDir dir;
  StatsSegment live, exited;
  ASSERT_EQ(StatsSegment::Create(dir.path().c_str(), &live), 0);
  live.AddPool("keep", PoolKind::kMempool, 0, 4096);
  std::string live_path = live.path();
  live.Close();
  // Same process again (an exec): the first file is set aside, marked exited.
  ASSERT_EQ(StatsSegment::Create(dir.path().c_str(), &exited), 0);
  exited.AddPool("keep", PoolKind::kMempool, 0, 4096);
  SegmentCollector collector({.run_dir = dir.path(), .reader_euid = geteuid()});
  collector.Collect();
  std::string text = SerializeText(collector.Collect());
  EXPECT_EQ(Sample(text, "dmashim_exporter_segments_reaped_total"), 1) << text;
  EXPECT_EQ(Sample(text, "dmashim_exporter_segments"), 1);
  EXPECT_TRUE(std::filesystem::exists(live_path));
  exited.MarkExited();
  collector.Collect();
  collector.Collect();
  EXPECT_FALSE(std::filesystem::exists(live_path));
  exited.Close();
}

}  // namespace
}  // namespace dmashim
