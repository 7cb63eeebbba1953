// Figure 7 of DESIGN §8: one exporter scrape of 1,000 processes × 8 pools (target ≤ 50 ms), and the
// shim's per-process memory besides reserves (the stats segment; target ≤ 1 MiB).
//
// The segments are real: one is written by the shim's writer (StatsSegment) with 8 busy pools and
// a few call sites, then copied under 1,000 pids. Those pids are not running here, so the
// collector is pointed at a stand-in /proc whose <pid>/stat files carry the recorded start times:
// every segment reads as a live process and nothing is reaped between iterations.
//
// BM_Scrape1000x8 is the figure: the scrape as /metrics and --once produce it (read, merge, write
// the text into a reused buffer). BM_ScrapeHttp1000x8 adds the server: one GET /metrics over
// loopback to the exporter's Exposer, until the last byte is read. BM_ScrapeFamilies1000x8 is the
// path the figure replaced: prometheus-cpp MetricFamily objects serialized by its TextSerializer.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "benchmark/benchmark.h"
#include "exporter/collector.h"
#include "exporter/metric_sink.h"
#include "exporter/metrics_endpoint.h"
#include "prometheus/exposer.h"
#include "shim/stats_segment.h"

namespace dmashim {
namespace {

constexpr int kProcesses = 1000;
constexpr int kPools = 8;
constexpr int32_t kFirstPid = 4'000'000;  // above pid_max's default: never a real process here
constexpr uint64_t kStartTicks = 12345;

struct Fixture {
  std::string root, run_dir, proc_root;
  Fixture() {
    // Under $TMPDIR (else /tmp); main() removes it when the benchmarks are done (59 MB).
    const char* tmp = getenv("TMPDIR");
    std::string tmpl = std::string(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp") + "/dmashim-bench-XXXXXX";
    if (mkdtemp(tmpl.data()) == nullptr) {
      fprintf(stderr, "bench_exporter_scrape: cannot create %s: %s\n", tmpl.c_str(), strerror(errno));
      abort();
    }
    root = tmpl;
    run_dir = root + "/run";
    proc_root = root + "/proc";
    std::filesystem::create_directories(proc_root);
    mkdir(run_dir.c_str(), 0700);

    // One real segment from the writer, with every pool busy.
    StatsSegment seg;
    if (int err = StatsSegment::Create((root + "/template").c_str(), &seg); err != 0) {
      fprintf(stderr, "bench_exporter_scrape: cannot create a segment: %s\n", strerror(err));
      abort();
    }
    for (int p = 0; p < kPools; ++p) {
      PoolStats* s = seg.AddPool(absl::StrCat("pool-", p).c_str(), PoolKind::kMempool, 0, 2 << 20);
      s->alloc_source.store(1000 + p);
      s->alloc_reserve.store(50'000 + p);
      s->alloc_waited.store(17);
      s->fail_fast.store(3);
      s->fail_timeout.store(2);
      for (size_t b = 0; b < kWaitBuckets; ++b) s->wait_buckets[b].store(b + 1);
      s->wait_sum_ns.store(123'456'789);
      s->reserve_target.store(64);
      s->reserve_level.store(60);
      s->in_use.store(4);
      s->high_water.store(40);
      uintptr_t pcs[4] = {0x401000u + static_cast<uintptr_t>(p), 0x402000, 0x403000, 0x404000};
      seg.RecordSite(p, pcs, 4, 1'000'000, false);
    }
    std::string bytes(sizeof(SegmentFile), '\0');
    memcpy(bytes.data(), static_cast<const void*>(seg.file()), bytes.size());

    for (int i = 0; i < kProcesses; ++i) {
      const int32_t pid = kFirstPid + i;
      auto* f = reinterpret_cast<SegmentFile*>(bytes.data());
      f->process.pid = pid;
      f->process.start_time_ticks = kStartTicks;
      const std::string name = absl::StrCat(run_dir, "/", pid, ".", kStartTicks, ".seg");
      int fd = open(name.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
      if (fd < 0 || write(fd, bytes.data(), bytes.size()) != static_cast<ssize_t>(bytes.size())) abort();
      close(fd);
      const std::string pdir = absl::StrCat(proc_root, "/", pid);
      std::filesystem::create_directories(pdir);
      std::string stat = absl::StrCat(pid, " (bench) S");
      for (int field = 4; field <= 21; ++field) stat += " 0";
      absl::StrAppend(&stat, " ", kStartTicks, " 0 0\n");
      std::ofstream(pdir + "/stat") << stat;
    }
  }
  ~Fixture() {
    std::error_code ec;
    std::filesystem::remove_all(root, ec);
  }
  CollectorOptions Options() const {
    CollectorOptions o;
    o.run_dir = run_dir;
    o.proc_root = proc_root;
    o.reader_euid = geteuid();
    return o;
  }
};

// Made by the first benchmark that needs it, removed by main() when the benchmarks are done.
std::unique_ptr<Fixture> g_shared;
Fixture& Shared() {
  if (!g_shared) g_shared = std::make_unique<Fixture>();
  return *g_shared;
}

// A whole scrape as /metrics serves it: read 1,000 segments, merge, write the text.
void BM_Scrape1000x8(benchmark::State& state) {
  SegmentCollector collector(Shared().Options());
  TextSink text;
  for (auto _ : state) {
    collector.ScrapeText(text);
    benchmark::DoNotOptimize(text.text().data());
  }
  size_t samples = 0;
  for (absl::string_view line : absl::StrSplit(text.text(), '\n', absl::SkipEmpty()))
    samples += line[0] != '#';
  state.counters["processes"] = kProcesses;
  state.counters["pools_per_process"] = kPools;
  state.counters["exposition_bytes"] = static_cast<double>(text.text().size());
  state.counters["samples"] = static_cast<double>(samples);
  state.counters["segment_bytes_per_process"] = static_cast<double>(sizeof(SegmentFile));
}
BENCHMARK(BM_Scrape1000x8)->Unit(benchmark::kMillisecond)->MinTime(2.0)->UseRealTime();

// GET /metrics over loopback from the exporter's own server, as Prometheus scrapes it.
size_t HttpGetMetrics(int port) {
  int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  size_t got = 0;
  if (connect(s, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) {
    static constexpr char kRequest[] = "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
    if (write(s, kRequest, sizeof kRequest - 1) == static_cast<ssize_t>(sizeof kRequest - 1)) {
      static char buf[1 << 20];
      for (ssize_t n; (n = read(s, buf, sizeof buf)) > 0;) got += static_cast<size_t>(n);
    }
  }
  close(s);
  return got;
}

void BM_ScrapeHttp1000x8(benchmark::State& state) {
  auto collector = std::make_shared<SegmentCollector>(Shared().Options());
  MetricsEndpoint endpoint(collector);
  prometheus::Exposer exposer("127.0.0.1:0", 2, endpoint.callbacks());
  const int port = exposer.GetListeningPorts().at(0);
  size_t bytes = 0;
  for (auto _ : state) bytes = HttpGetMetrics(port);
  if (bytes < 1'000'000) state.SkipWithError("short response");
  state.counters["response_bytes"] = static_cast<double>(bytes);
}
BENCHMARK(BM_ScrapeHttp1000x8)->Unit(benchmark::kMillisecond)->MinTime(2.0)->UseRealTime();

// Before: the same scrape as prometheus-cpp objects, serialized by prometheus-cpp.
void BM_ScrapeFamilies1000x8(benchmark::State& state) {
  SegmentCollector collector(Shared().Options());
  size_t series = 0;
  for (auto _ : state) {
    std::vector<prometheus::MetricFamily> families = collector.Collect();
    std::string text = SerializeText(families);
    benchmark::DoNotOptimize(text.data());
    series = 0;
    for (const auto& f : families) series += f.metric.size();
  }
  state.counters["series"] = static_cast<double>(series);
}
BENCHMARK(BM_ScrapeFamilies1000x8)->Unit(benchmark::kMillisecond)->MinTime(2.0)->UseRealTime();

}  // namespace
}  // namespace dmashim

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  dmashim::g_shared.reset();
  printf("shim memory per process besides reserves: stats segment %zu bytes (%.1f KiB); limit 1 MiB\n",
         sizeof(dmashim::SegmentFile), sizeof(dmashim::SegmentFile) / 1024.0);
  benchmark::Shutdown();
  return 0;
}
