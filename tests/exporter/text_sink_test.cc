// The exporter's two sinks agree: the exposition text /metrics serves (TextSink) is, byte for byte,
// prometheus-cpp's TextSerializer output of the MetricFamily objects (FamilySink) that the same
// scrape produced, over run directories built to hit every path of the collector — several
// processes, series merged when the pid label is off (and a pre-exec segment merged even with it),
// label values that need escaping, zero, huge, negative and fractional values, histograms, a
// DmaPool merged with a Mempool, dead, exited and reaped segments, hostile files. And the double
// formatting matches printf's "%.16g", which is what prometheus-cpp 1.0 writes.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cfloat>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <memory>
#include <random>
#include <string>

#include "absl/strings/str_cat.h"
#include "exporter/collector.h"
#include "exporter/metric_sink.h"
#include "gtest/gtest.h"
#include "pools/sys.h"
#include "shim/stats_segment.h"
#include "tests/exporter/test_util.h"

namespace dmashim {
namespace {

using testing::Sample;
using testing::TempDir;

// Sends one scrape to two sinks.
class TeeSink : public MetricSink {
 public:
  TeeSink(MetricSink& a, MetricSink& b) : a_(a), b_(b) {}
  void BeginFamily(const FamilyDesc& f) override {
    a_.BeginFamily(f);
    b_.BeginFamily(f);
  }
  void Sample(const SeriesLabels& l, absl::string_view n, absl::string_view v, double x) override {
    a_.Sample(l, n, v, x);
    b_.Sample(l, n, v, x);
  }
  void Histogram(const SeriesLabels& l, const uint64_t* c, double sum) override {
    a_.Histogram(l, c, sum);
    b_.Histogram(l, c, sum);
  }

 private:
  MetricSink& a_;
  MetricSink& b_;
};

struct BothTexts {
  std::string fast;        // TextSink
  std::string serialized;  // TextSerializer(FamilySink)
};

BothTexts ScrapeBoth(const SegmentCollector& collector) {
  TextSink text;
  FamilySink families;
  TeeSink tee(text, families);
  collector.Scrape(tee);
  return {std::string(text.text()), SerializeText(families.Take())};
}

// The first line where the texts differ, for a readable failure.
std::string FirstDifference(const std::string& a, const std::string& b) {
  size_t i = 0;
  while (i < a.size() && i < b.size() && a[i] == b[i]) ++i;
  size_t line = a.rfind('\n', i == 0 ? 0 : i - 1);
  line = line == std::string::npos ? 0 : line + 1;
  return absl::StrCat("fast:       ", a.substr(line, a.find('\n', i) - line),
                      "\nserialized: ", b.substr(line, b.find('\n', i) - line));
}

void ExpectSameText(const BothTexts& t) {
  EXPECT_GT(t.fast.size(), 1000u);
  EXPECT_EQ(t.fast.size(), t.serialized.size());
  EXPECT_TRUE(t.fast == t.serialized) << FirstDifference(t.fast, t.serialized);
}

constexpr uint64_t kStart = 777;

// Segments of made-up processes: copies of one real segment from the writer (pools "rx", a
// Mempool, and "blocks", a DmaPool), each with its own pid, comm and values. A process is alive
// when the stand-in /proc has its pid with the recorded start time.
class ForgedRun {
 public:
  ForgedRun() {
    for (const char* d :
         {"run", "proc", "writer", "hugepages/hugepages-2048kB", "hugepages/hugepages-1048576kB"})
      std::filesystem::create_directories(dir_ / d);
    testing::WriteFile(dir_ / "hugepages/hugepages-2048kB/nr_hugepages", "256\n");
    testing::WriteFile(dir_ / "hugepages/hugepages-2048kB/free_hugepages", "17\n");
    testing::WriteFile(dir_ / "hugepages/hugepages-1048576kB/nr_hugepages", "0\n");
    StatsSegment seg;
    EXPECT_EQ(StatsSegment::Create((dir_ / "writer").c_str(), &seg), 0);
    seg.AddPool("rx", PoolKind::kMempool, 0, 2u << 20);
    seg.AddPool("blocks", PoolKind::kDmaPool, 0, 2048);
    template_ = std::make_unique<SegmentFile>();
    memcpy(static_cast<void*>(template_.get()), static_cast<const void*>(seg.file()),
           sizeof(SegmentFile));
    seg.Close();
  }

  std::unique_ptr<SegmentFile> Process(int32_t pid, const char* comm) const {
    auto f = std::make_unique<SegmentFile>();
    memcpy(static_cast<void*>(f.get()), static_cast<const void*>(template_.get()),
           sizeof(SegmentFile));
    f->process.pid = pid;
    f->process.start_time_ticks = kStart;
    memset(f->process.comm, 0, sizeof f->process.comm);
    strncpy(f->process.comm, comm, sizeof f->process.comm - 1);
    return f;
  }

  void Write(const SegmentFile& f, bool alive, const std::string& suffix = "") {
    const std::string name = absl::StrCat(f.process.pid, ".", kStart, suffix, ".seg");
    testing::WriteFile(dir_ / ("run/" + name),
                       std::string(reinterpret_cast<const char*>(&f), sizeof f));
    if (!alive) return;
    const std::string pdir = dir_ / absl::StrCat("proc/", f.process.pid);
    std::filesystem::create_directories(pdir);
    std::string stat = absl::StrCat(f.process.pid, " (forged) S");
    for (int field = 4; field <= 21; ++field) stat += " 0";
    testing::WriteFile(pdir + "/stat", absl::StrCat(stat, " ", kStart, " 0 0\n"));
  }

  void WriteRaw(const std::string& name, const std::string& bytes) {
    testing::WriteFile(dir_ / ("run/" + name), bytes);
  }

  CollectorOptions Options(bool pid_label) const {
    CollectorOptions o;
    o.run_dir = dir_ / "run";
    o.proc_root = dir_ / "proc";
    o.hugepages_dir = dir_ / "hugepages";
    o.reader_euid = geteuid();
    o.pid_label = pid_label;
    return o;
  }
  std::string run_dir() const { return dir_ / "run"; }

 private:
  TempDir dir_;
  std::unique_ptr<SegmentFile> template_;
};

// Every value path: zero, the largest counters, negative gauges, fractions of a second, 2^53 + 1
// (not a double), a wait in progress, a histogram with observations everywhere.
void FillExtremes(PoolStats& s, uint64_t salt) {
  s.alloc_source = 0;
  s.alloc_reserve = std::numeric_limits<uint64_t>::max();
  s.alloc_waited = (uint64_t{1} << 53) + 1;
  s.fail_fast = 10'000'000'000'000'000u + salt;
  s.fail_timeout = 100'000 + salt;
  s.fail_interrupted = 99'999;
  s.fail_source = 1'000'000;
  s.frees = 12'345'678'901'234'567u;
  for (size_t i = 0; i < kWaitBuckets; ++i) s.wait_buckets[i] = (i * 7919 + salt) % 1000;
  s.wait_buckets[3] = std::numeric_limits<uint64_t>::max() / 4;
  s.wait_sum_ns = 123'456'789 + salt;
  s.source_calls = 3;
  s.source_ns = 1 + salt;
  s.blocked_now = 2;
  s.waiter_start_ns[1] = MonotonicNs() - 1'500'000'000 - salt;
  s.reserve_target = 64;
  s.reserve_level = -5;
  s.elements_total = std::numeric_limits<int64_t>::max();
  s.in_use = 0;
  s.bytes_in_use = 3;
  s.requested_bytes_in_use = 5;  // negative waste: exported as 0
  s.high_water = std::numeric_limits<int64_t>::min() + static_cast<int64_t>(salt);
  s.dma_active_blocks = 7;
  s.dma_total_blocks = 64;
  s.dma_pages = 1;
}

// Several processes, two of them "app" (merged without the pid label), one with a pre-exec
// segment of the same pid, one with a comm and pool names that need escaping, a dead one, an
// exited one, and hostile files.
void Populate(ForgedRun& run) {
  auto a = run.Process(100, "app");
  FillExtremes(a->pools[0], 1);
  FillExtremes(a->pools[1], 2);
  a->counters.passthrough[0] = 11;
  a->counters.hooks[0] = static_cast<uint32_t>(HookState::kNotFiring);
  a->counters.hooks[2] = static_cast<uint32_t>(HookState::kFiring);
  strcpy(a->process.exe, "/usr/bin/app");
  run.Write(*a, /*alive=*/true);

  // The same process before its exec: another file, same labels, marked exited.
  auto pre = run.Process(100, "app");
  FillExtremes(pre->pools[0], 3);
  pre->pool_count = 1;
  pre->counters.hooks[0] = static_cast<uint32_t>(HookState::kFiring);
  strcpy(pre->process.exe, "/usr/bin/launcher");
  pre->process.exited = 1;
  run.Write(*pre, /*alive=*/true, ".pre-exec");

  auto b = run.Process(101, "app");  // dead: not in /proc, never marked exited (a crash)
  FillExtremes(b->pools[0], 4);
  b->pools[0].high_water = 1'000'000;
  b->pools[0].reserve_level = 1;
  // A Mempool under the DmaPool's name: merged with it when the pid label is off.
  b->pools[1].kind = static_cast<uint32_t>(PoolKind::kMempool);
  b->pools[1].dma_active_blocks = 1000;
  b->counters.config_errors = 2;
  b->counters.sites_dropped = std::numeric_limits<uint64_t>::max();
  strcpy(b->process.exe, "/usr/bin/app");
  run.Write(*b, /*alive=*/false);

  auto c = run.Process(102, "q\"u\\o\nte");  // the newline becomes '?'
  strcpy(c->pools[0].name, "back\\slash");
  strcpy(c->pools[1].name, "quo\"te\x7f");
  c->pools[0].wait_sum_ns = 1;
  c->pools[0].source_ns = 999'999'999'999;
  strcpy(c->process.exe, "/opt/\"odd\"\\path");
  c->process.exited = 1;
  run.Write(*c, /*alive=*/true);

  auto d = run.Process(103, "idle");  // all zero
  run.Write(*d, /*alive=*/true);

  std::string bytes(reinterpret_cast<const char*>(d.get()), sizeof(SegmentFile));
  run.WriteRaw("truncated.seg", bytes.substr(0, 100));
  std::string magic = bytes;
  testing::Poke<uint64_t>(magic, offsetof(SegmentFile, header.magic), 0xdeadbeef);
  run.WriteRaw("magic.seg", magic);
  std::string pools = bytes;
  testing::Poke<uint32_t>(pools, offsetof(SegmentFile, pool_count), 1'000'000);
  run.WriteRaw("pools.seg", pools);
}

TEST(TextSink, IsTextSerializerByteForByteAcrossScrapesWithPidLabel) {
  ForgedRun run;
  Populate(run);
  SegmentCollector collector(run.Options(/*pid_label=*/true));
  BothTexts first = ScrapeBoth(collector);
  ExpectSameText(first);
  // Escaped label values, on the fast path too.
  EXPECT_NE(first.fast.find("comm=\"q\\\"u\\\\o?te\",pid=\"102\",pool=\"back\\\\slash\""),
            std::string::npos)
      << first.fast;
  EXPECT_NE(first.fast.find("pool=\"quo\\\"te?\""), std::string::npos);
  EXPECT_NE(first.fast.find("exe=\"/opt/\\\"odd\\\"\\\\path\""), std::string::npos);
  EXPECT_EQ(Sample(first.fast, "dmashim_exporter_segment_errors_total{reason=\"truncated\"}"), 1);
  EXPECT_EQ(Sample(first.fast, "dmashim_exporter_segments"), 5);

  // The second scrape reaps the dead and exited segments exported by the first.
  BothTexts second = ScrapeBoth(collector);
  ExpectSameText(second);
  EXPECT_EQ(Sample(second.fast, "dmashim_exporter_segments_reaped_total"), 3);
  EXPECT_EQ(Sample(second.fast, "dmashim_exporter_segments"), 2);
  EXPECT_EQ(second.fast.find("pid=\"101\""), std::string::npos);
}

TEST(TextSink, IsTextSerializerByteForByteWhenSeriesMergeWithoutPid) {
  ForgedRun run;
  Populate(run);
  SegmentCollector collector(run.Options(/*pid_label=*/false));
  BothTexts t = ScrapeBoth(collector);
  ExpectSameText(t);
  EXPECT_EQ(t.fast.find("pid=\""), std::string::npos);
  // "app" is pids 100 (two segments) and 101: counters add, the high-water mark takes the max,
  // process_info keeps one series per exe, hooks_firing the max.
  const std::string rx = "{comm=\"app\",pool=\"rx\"";
  EXPECT_EQ(Sample(t.fast, "dmashim_allocations_total" + rx + ",result=\"source\"}"), 0);
  EXPECT_EQ(Sample(t.fast, "dmashim_failures_total" + rx + ",reason=\"timeout\"}"),
            3 * 100'000 + 1 + 3 + 4);
  EXPECT_EQ(Sample(t.fast, "dmashim_high_water_elements" + rx + "}"), 1'000'000);
  EXPECT_EQ(Sample(t.fast, "dmashim_reserve_elements" + rx + "}"), -5 - 5 + 1);
  EXPECT_TRUE(Sample(t.fast, "dmashim_process_info{comm=\"app\",exe=\"/usr/bin/launcher\"}"));
  EXPECT_TRUE(Sample(t.fast, "dmashim_process_info{comm=\"app\",exe=\"/usr/bin/app\"}"));
  EXPECT_EQ(Sample(t.fast, "dmashim_hooks_firing{comm=\"app\",family=\"mmap\"}"), 1);
  EXPECT_EQ(Sample(t.fast, "dmashim_process_alive{comm=\"app\"}"), 1);
  // The DmaPool series come from the DmaPool alone.
  EXPECT_EQ(Sample(t.fast, "dmashim_dma_active_blocks{comm=\"app\",pool=\"blocks\"}"), 7);
}

TEST(TextSink, PromtoolAcceptsTheForgedRun) {
  if (access("/usr/bin/promtool", X_OK) != 0) GTEST_SKIP() << "apt-get install prometheus";
  ForgedRun run;
  Populate(run);
  SegmentCollector collector(run.Options(/*pid_label=*/true));
  TextSink text;
  collector.ScrapeText(text);
  auto r = testing::Run({"/usr/bin/promtool", "check", "metrics"}, std::string(text.text()));
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
}

TEST(TextSink, BufferIsReusedAndClearedBetweenScrapes) {
  ForgedRun run;
  Populate(run);
  SegmentCollector collector(run.Options(/*pid_label=*/true));
  TextSink text;
  collector.ScrapeText(text);
  const std::string first(text.text());
  collector.ScrapeText(text);  // reaps: smaller
  EXPECT_LT(text.text().size(), first.size());
  EXPECT_EQ(text.text().substr(0, 7), "# HELP ");
  EXPECT_EQ(std::string(text.text()).find("pid=\"101\""), std::string::npos);
  EXPECT_EQ(Sample(std::string(text.text()), "dmashim_exporter_segments"), 2);
}

TEST(TextSink, EmptyRunDirectoryStillMatches) {
  TempDir dir;
  CollectorOptions o;
  o.run_dir = dir / "missing";
  o.hugepages_dir = dir / "none";
  SegmentCollector collector(o);
  TextSink text;
  FamilySink families;
  TeeSink tee(text, families);
  collector.Scrape(tee);
  EXPECT_EQ(std::string(text.text()), SerializeText(families.Take()));
  EXPECT_EQ(Sample(std::string(text.text()), "dmashim_exporter_segments"), 0);
}

// The sinks on their own, over shapes the collector does not produce today: bounds without +Inf,
// a histogram without buckets, no labels at all, an empty HELP, a family with no sample.
TEST(TextSink, MatchesTextSerializerForHandMadeFamilies) {
  static constexpr double kBounds[] = {0.5, 2};
  const FamilyDesc counter{"c_total", "a counter", prometheus::MetricType::Counter, {}};
  const FamilyDesc empty{"never", "no samples", prometheus::MetricType::Gauge, {}};
  const FamilyDesc gauge{"g", "", prometheus::MetricType::Gauge, {}};
  const FamilyDesc hist{"h_seconds", "bounds without +Inf", prometheus::MetricType::Histogram,
                        kBounds};
  const FamilyDesc bare{"b", "no buckets", prometheus::MetricType::Histogram, {}};
  SeriesLabels none, some;
  some.Add("pool", "a\"b").Add("x", "");
  TextSink text;
  FamilySink families;
  TeeSink tee(text, families);
  for (int scrape = 0; scrape < 2; ++scrape) {  // the second reuses the buffer
    text.Clear();
    tee.BeginFamily(counter);
    tee.Sample(none, "", "", 1e300);
    tee.Sample(some, "", "", 0.1);
    tee.Sample(none, "only", "extra\n", -0.0);
    tee.BeginFamily(empty);
    tee.BeginFamily(gauge);
    tee.Sample(some, "k", "v", -7);
    tee.BeginFamily(hist);
    const uint64_t cumulative[] = {1, 5};
    tee.Histogram(some, cumulative, 3.25);
    tee.Histogram(none, cumulative, 0);
    tee.BeginFamily(bare);
    tee.Histogram(some, nullptr, 0.5);
    const std::string serialized = SerializeText(families.Take());
    EXPECT_EQ(std::string(text.text()), serialized)
        << FirstDifference(std::string(text.text()), serialized);
  }
  EXPECT_EQ(std::string(text.text()).find("never"), std::string::npos);
  EXPECT_NE(std::string(text.text()).find("h_seconds_bucket{le=\"+Inf\"} 5\n"), std::string::npos);
}

std::string Printf16g(double v) {
  char buf[64];
  snprintf(buf, sizeof buf, "%.16g", v);
  return buf;
}

std::string Format(double v) {
  char buf[40];
  return std::string(buf, FormatDouble(buf, v));
}

TEST(FormatDouble, IsPrintfPercent16g) {
  // clang-format off
  std::vector<double> values = {0.0,     -0.0,    1.0,       -1.0,     0.1,     0.3,
                                1e-9,    1e-05,   0.005,     2.5,      30,      40.002,
                                99999,   100000,  1e15,      1e16 - 2, 1e16,    1e16 + 2,
                                1e17,    1e21,    1e22,      -1e16,    -1e16 + 2, DBL_MAX,
                                DBL_MIN, 5e-324,  -DBL_MAX,  9007199254740993.0,
                                static_cast<double>(std::numeric_limits<uint64_t>::max()),
                                static_cast<double>(std::numeric_limits<int64_t>::min())};
  // clang-format on
  std::mt19937_64 rng(42);
  for (int i = 0; i < 200'000; ++i) {
    uint64_t bits = rng();
    double d;
    memcpy(&d, &bits, sizeof d);
    if (!std::isnan(d)) values.push_back(d);
    values.push_back(static_cast<double>(rng() % 100'000'000'000'000'000u));   // integers ≤ 1e17
    values.push_back(static_cast<double>(rng() % 10'000'000'000'000u) / 1e9);  // seconds
    values.push_back(std::ldexp(1.0, static_cast<int>(rng() % 2000) - 1000));
  }
  size_t mismatches = 0;
  for (double v : values) {
    if (Format(v) != Printf16g(v) && ++mismatches <= 5)
      ADD_FAILURE() << "FormatDouble(" << Printf16g(v) << ") = " << Format(v);
  }
  EXPECT_EQ(mismatches, 0u);
  EXPECT_EQ(Format(std::nan("")), "Nan");
  EXPECT_EQ(Format(std::numeric_limits<double>::infinity()), "+Inf");
  EXPECT_EQ(Format(-std::numeric_limits<double>::infinity()), "-Inf");
}

TEST(SeriesLabels, EscapesValuesOnceForEverySeries) {
  SeriesLabels l;
  l.Add("comm", "a\\b\"c\nd").Add("pid", "7");
  EXPECT_EQ(l.text(), "comm=\"a\\\\b\\\"c\\nd\",pid=\"7\"");
  ASSERT_EQ(l.pairs().size(), 2u);
  EXPECT_EQ(l.pairs()[0].value, "a\\b\"c\nd");  // the raw value, for prometheus-cpp
}

}  // namespace
}  // namespace dmashim
