#include "exporter/collector.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <fstream>
#include <limits>
#include <memory>
#include <optional>

#include "absl/cleanup/cleanup.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "exporter/segment_reader.h"
#include "prometheus/text_serializer.h"

namespace dmashim {
namespace {

using prometheus::MetricType;
constexpr auto C = MetricType::Counter;
constexpr auto G = MetricType::Gauge;
constexpr auto H = MetricType::Histogram;

// How samples with equal labels combine (see collector.h).
enum class Merge { kSum, kMax };
// What one series of a family describes: a process, a pool (a DmaPool only), the node, the
// exporter itself.
enum class Scope { kProcess, kPool, kDmaPool, kNode, kExporter };

// Every family the exporter emits, in exposition order.
enum Fam : size_t {
  kPassthroughCalls, kProcessInfo, kProcessAlive, kHooksFiring, kConfigErrors, kSitesDropped,
  kAllocations, kFailures, kFrees, kWaitSeconds, kBlockedThreads, kLongestWait, kReserve,
  kReserveTarget, kElementsHeld, kInUseElements, kInUseBytes, kHighWater, kRoundingWaste,
  kElementBytes, kSourceCalls, kSourceSeconds, kSourceFailures, kSourceReleases,
  kDmaActiveBlocks, kDmaTotalBlocks, kDmaPages,
  kNodeHugepages, kNodeHugepagesFree,
  kExporterSegments, kSegmentErrors, kSegmentsReaped, kScrapeDuration,
  kFamilyCount
};

// The wait histogram's upper bounds in seconds, +Inf last.
constexpr std::array<double, kWaitBuckets> kWaitBoundsSeconds = [] {
  std::array<double, kWaitBuckets> b{};
  for (size_t i = 0; i < kWaitBuckets; ++i)
    b[i] = i < std::size(kWaitBucketBoundsNs) ? kWaitBucketBoundsNs[i] / 1e9
                                              : std::numeric_limits<double>::infinity();
  return b;
}();

struct Family {
  Fam id;
  FamilyDesc desc;
  Merge merge;
  Scope scope;
};

// The one list of what the exporter emits (README's metrics table is generated from it).
constexpr Family kFamilies[] = {
    {kPassthroughCalls,
     {"dmashim_passthrough_calls_total", "Calls passed straight to the kernel, by call", C, {}},
     Merge::kSum, Scope::kProcess},
    {kProcessInfo, {"dmashim_process_info", "A process under the shim (value 1)", G, {}},
     Merge::kMax, Scope::kProcess},
    {kProcessAlive,
     {"dmashim_process_alive", "1 while the process runs, 0 for its last export", G, {}},
     Merge::kMax, Scope::kProcess},
    {kHooksFiring,
     {"dmashim_hooks_firing",
      "Self-check per interposition family: 1 hooks seen firing, 0 not "
      "firing (absent: not checked yet)",
      G, {}},
     Merge::kMax, Scope::kProcess},
    {kConfigErrors,
     {"dmashim_config_errors_total", "Configuration errors found at start-up", C, {}},
     Merge::kSum, Scope::kProcess},
    {kSitesDropped,
     {"dmashim_call_sites_dropped_total", "Slow-path events not recorded: call-site table full",
      C, {}},
     Merge::kSum, Scope::kProcess},

    {kAllocations,
     {"dmashim_allocations_total",
      "Allocations served, by result: source (at once from the kernel), "
      "reserve (the pool's own free elements), waited (after blocking)",
      C, {}},
     Merge::kSum, Scope::kPool},
    {kFailures, {"dmashim_failures_total", "Failed allocations, by reason", C, {}}, Merge::kSum,
     Scope::kPool},
    {kFrees, {"dmashim_frees_total", "Elements freed back to the pool", C, {}}, Merge::kSum,
     Scope::kPool},
    {kWaitSeconds,
     {"dmashim_wait_seconds", "Time allocations spent blocked", H, kWaitBoundsSeconds},
     Merge::kSum, Scope::kPool},
    {kBlockedThreads, {"dmashim_blocked_threads", "Threads blocked in the pool now", G, {}},
     Merge::kSum, Scope::kPool},
    {kLongestWait,
     {"dmashim_longest_wait_seconds", "Age of the oldest wait in progress", G, {}},
     Merge::kMax, Scope::kPool},
    {kReserve, {"dmashim_reserve_elements", "Free elements the pool holds now", G, {}},
     Merge::kSum, Scope::kPool},
    {kReserveTarget,
     {"dmashim_reserve_target_elements", "Configured reserve (min_nr)", G, {}}, Merge::kSum,
     Scope::kPool},
    {kElementsHeld,
     {"dmashim_elements_held", "Elements the pool holds, free and in use", G, {}}, Merge::kSum,
     Scope::kPool},
    {kInUseElements, {"dmashim_in_use_elements", "Elements handed out", G, {}}, Merge::kSum,
     Scope::kPool},
    {kInUseBytes, {"dmashim_in_use_bytes", "Bytes handed out", G, {}}, Merge::kSum,
     Scope::kPool},
    {kHighWater, {"dmashim_high_water_elements", "Peak of elements in use", G, {}},
     Merge::kMax, Scope::kPool},
    {kRoundingWaste,
     {"dmashim_rounding_waste_bytes", "Bytes handed out beyond what callers asked for", G, {}},
     Merge::kSum, Scope::kPool},
    {kElementBytes,
     {"dmashim_element_bytes", "Size of one element (DmaPool: one block)", G, {}},
     Merge::kMax, Scope::kPool},
    {kSourceCalls,
     {"dmashim_source_calls_total", "Calls into the source allocator (the kernel)", C, {}},
     Merge::kSum, Scope::kPool},
    {kSourceSeconds,
     {"dmashim_source_seconds_total", "Time spent in the source allocator", C, {}},
     Merge::kSum, Scope::kPool},
    {kSourceFailures,
     {"dmashim_source_failures_total", "Source allocator calls that failed", C, {}},
     Merge::kSum, Scope::kPool},
    {kSourceReleases,
     {"dmashim_source_releases_total", "Elements given back to the source", C, {}},
     Merge::kSum, Scope::kPool},
    {kDmaActiveBlocks, {"dmashim_dma_active_blocks", "DmaPool blocks in use", G, {}},
     Merge::kSum, Scope::kDmaPool},
    {kDmaTotalBlocks, {"dmashim_dma_total_blocks", "DmaPool blocks carved", G, {}},
     Merge::kSum, Scope::kDmaPool},
    {kDmaPages, {"dmashim_dma_pages", "Pages the DmaPool carves blocks from", G, {}},
     Merge::kSum, Scope::kDmaPool},

    {kNodeHugepages,
     {"dmashim_node_hugepages", "Huge pages in the node's pool, by page size", G, {}},
     Merge::kSum, Scope::kNode},
    {kNodeHugepagesFree,
     {"dmashim_node_hugepages_free", "Huge pages free on the node, by page size", G, {}},
     Merge::kSum, Scope::kNode},

    {kExporterSegments,
     {"dmashim_exporter_segments", "Stats segments exported at this scrape", G, {}},
     Merge::kSum, Scope::kExporter},
    {kSegmentErrors,
     {"dmashim_exporter_segment_errors_total",
      "Segments skipped because they could not be read or were invalid, by "
      "reason (counted at every scrape that meets them)",
      C, {}},
     Merge::kSum, Scope::kExporter},
    {kSegmentsReaped,
     {"dmashim_exporter_segments_reaped_total",
      "Segments of dead processes removed after their last export", C, {}},
     Merge::kSum, Scope::kExporter},
    {kScrapeDuration,
     {"dmashim_exporter_scrape_duration_seconds", "Time this scrape took to read all segments",
      G, {}},
     Merge::kSum, Scope::kExporter},
};
static_assert(std::size(kFamilies) == kFamilyCount);
static_assert([] {
  for (size_t i = 0; i < kFamilyCount; ++i)
    if (kFamilies[i].id != i) return false;
  return true;
}(), "kFamilies is in Fam order");

double Load(const Counter& c) { return static_cast<double>(c.load(std::memory_order_relaxed)); }
double Load(const Gauge& g) { return static_cast<double>(g.load(std::memory_order_relaxed)); }

// What a pool's values depend on besides its record.
struct PoolContext {
  bool alive;
  uint64_t now_ns;
};
using PoolValue = double (*)(const PoolStats&, const PoolContext&);

template <auto kField>
double Field(const PoolStats& s, const PoolContext&) {
  return Load(s.*kField);
}

// A dead process has no waiters, whatever its last gauges said.
double BlockedThreads(const PoolStats& s, const PoolContext& c) {
  return c.alive ? Load(s.blocked_now) : 0.0;
}

double LongestWait(const PoolStats& s, const PoolContext& c) {
  uint64_t oldest = 0;
  for (const Counter& w : s.waiter_start_ns) {
    uint64_t t = w.load(std::memory_order_relaxed);
    if (t != 0 && (oldest == 0 || t < oldest)) oldest = t;
  }
  return c.alive && oldest != 0 && oldest < c.now_ns ? (c.now_ns - oldest) / 1e9 : 0.0;
}

double RoundingWaste(const PoolStats& s, const PoolContext&) {
  double waste = static_cast<double>(BytesInUse(s)) - static_cast<double>(RequestedBytesInUse(s));
  return waste > 0 ? waste : 0.0;
}

// The counter and gauge series of one pool (the wait histogram aside), in exposition order
// within each family.
struct PoolSeries {
  Fam family;
  const char* extra_name;  // "" when the series has no label of its own
  const char* extra_value;
  PoolValue value;
};
constexpr PoolSeries kPoolSeries[] = {
    {kAllocations, "result", "source", Field<&PoolStats::alloc_source>},
    {kAllocations, "result", "reserve", Field<&PoolStats::alloc_reserve>},
    {kAllocations, "result", "waited", Field<&PoolStats::alloc_waited>},
    {kFailures, "reason", "fail_fast", Field<&PoolStats::fail_fast>},
    {kFailures, "reason", "timeout", Field<&PoolStats::fail_timeout>},
    {kFailures, "reason", "interrupted", Field<&PoolStats::fail_interrupted>},
    {kFailures, "reason", "source", Field<&PoolStats::fail_source>},
    {kFrees, "", "", Field<&PoolStats::frees>},
    {kBlockedThreads, "", "", BlockedThreads},
    {kLongestWait, "", "", LongestWait},
    {kReserve, "", "",
     [](const PoolStats& s, const PoolContext&) { return static_cast<double>(ReserveLevel(s)); }},
    {kReserveTarget, "", "", Field<&PoolStats::reserve_target>},
    {kElementsHeld, "", "", Field<&PoolStats::elements_total>},
    {kInUseElements, "", "",
     [](const PoolStats& s, const PoolContext&) { return static_cast<double>(InUse(s)); }},
    {kInUseBytes, "", "",
     [](const PoolStats& s, const PoolContext&) { return static_cast<double>(BytesInUse(s)); }},
    {kHighWater, "", "", Field<&PoolStats::high_water>},
    {kRoundingWaste, "", "", RoundingWaste},
    {kElementBytes, "", "",
     [](const PoolStats& s, const PoolContext&) { return static_cast<double>(s.element_size); }},
    {kSourceCalls, "", "", Field<&PoolStats::source_calls>},
    {kSourceSeconds, "", "",
     [](const PoolStats& s, const PoolContext&) { return Load(s.source_ns) / 1e9; }},
    {kSourceFailures, "", "", Field<&PoolStats::source_failures>},
    {kSourceReleases, "", "", Field<&PoolStats::source_releases>},
    {kDmaActiveBlocks, "", "", Field<&PoolStats::dma_active_blocks>},
    {kDmaTotalBlocks, "", "", Field<&PoolStats::dma_total_blocks>},
    {kDmaPages, "", "", Field<&PoolStats::dma_pages>},
};
constexpr size_t kPoolSeriesCount = std::size(kPoolSeries);

// The first sample of a series sets it; later ones with equal labels merge into it.
void Fold(double& into, double v, Merge merge, bool first) {
  into = first ? v : merge == Merge::kSum ? into + v : std::max(into, v);
}

// One process's series (all segments with its labels, merged).
struct ProcessAgg {
  SeriesLabels labels;  // comm[, pid]
  double passthrough[std::size(kPassCallNames)] = {};
  std::vector<std::string> exes;  // process_info: one series per exe, sorted
  double alive = 0;
  std::optional<double> hooks[std::size(kHookFamilyNames)];
  double config_errors = 0;
  double sites_dropped = 0;
};

void FoldProcess(ProcessAgg& a, const Snapshot& snap, bool alive, bool first) {
  auto merge = [](Fam f) { return kFamilies[f].merge; };
  for (size_t i = 0; i < std::size(a.passthrough); ++i)
    Fold(a.passthrough[i], static_cast<double>(snap.passthrough[i]), merge(kPassthroughCalls),
         first);
  Fold(a.alive, alive ? 1.0 : 0.0, merge(kProcessAlive), first);
  for (size_t i = 0; i < std::size(a.hooks); ++i) {
    if (snap.hooks[i] == HookState::kUnknown) continue;
    double v = snap.hooks[i] == HookState::kFiring ? 1.0 : 0.0;
    double into = a.hooks[i].value_or(0);
    Fold(into, v, merge(kHooksFiring), !a.hooks[i].has_value());
    a.hooks[i] = into;
  }
  Fold(a.config_errors, static_cast<double>(snap.config_errors), merge(kConfigErrors), first);
  Fold(a.sites_dropped, static_cast<double>(snap.sites_dropped), merge(kSitesDropped), first);
}

// One pool's series (all segments' pools with its labels, merged).
struct PoolAgg {
  SeriesLabels labels;  // comm[, pid], pool
  bool dma = false;     // a DmaPool among them: the DmaPool families have its series
  double values[kPoolSeriesCount] = {};
  uint64_t buckets[kWaitBuckets] = {};  // non-cumulative, as in PoolStats
  double wait_sum = 0;
};

void FoldPool(PoolAgg& a, const PoolStats& s, const PoolContext& c, bool first) {
  const bool dma = s.kind == static_cast<uint32_t>(PoolKind::kDmaPool);
  for (size_t i = 0; i < kPoolSeriesCount; ++i) {
    const Family& f = kFamilies[kPoolSeries[i].family];
    if (f.scope == Scope::kDmaPool && !dma) continue;
    Fold(a.values[i], kPoolSeries[i].value(s, c), f.merge,
         f.scope == Scope::kDmaPool ? !a.dma : first);
  }
  a.dma |= dma;
  for (size_t i = 0; i < kWaitBuckets; ++i)
    a.buckets[i] += s.wait_buckets[i].load(std::memory_order_relaxed);
  a.wait_sum += Load(s.wait_sum_ns) / 1e9;
}

// Label values come from untrusted files; Prometheus rejects a scrape with invalid UTF-8, so
// anything but printable ASCII becomes '?'. (comm and pool names are ASCII in practice.)
std::string CleanLabel(const std::string& s) {
  std::string out = s;
  for (char& c : out)
    if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) >= 0x7f) c = '?';
  return out;
}

uint64_t MonotonicNow() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000u + static_cast<uint64_t>(ts.tv_nsec);
}

// Series keyed by their labels' text (escaped, so equal text means equal labels), kept in
// first-seen order until Sorted().
template <typename Agg>
class Merged {
 public:
  // The aggregate for `labels`, and whether it is new.
  std::pair<Agg*, bool> Find(const SeriesLabels& labels) {
    auto [it, inserted] = index_.try_emplace(labels.text(), list_.size());
    if (inserted) list_.emplace_back().labels = labels;
    return {&list_[it->second], inserted};
  }
  // In label order (SeriesLabels::operator<), so a scrape's text does not depend on readdir.
  std::vector<const Agg*> Sorted() const {
    std::vector<const Agg*> out;
    out.reserve(list_.size());
    for (const Agg& a : list_) out.push_back(&a);
    std::sort(out.begin(), out.end(),
              [](const Agg* a, const Agg* b) { return a->labels < b->labels; });
    return out;
  }
  void Clear() {
    index_.clear();
    list_.clear();
  }

 private:
  absl::flat_hash_map<std::string, size_t> index_;
  std::vector<Agg> list_;
};

}  // namespace

struct SegmentCollector::Read {
  Merged<ProcessAgg> processes;
  Merged<PoolAgg> pools;
  std::map<std::string, double> node_total, node_free;  // by page size label
  size_t segments = 0;
  double seconds = 0;  // reading took

  void Clear() {
    processes.Clear();
    pools.Clear();
    node_total.clear();
    node_free.clear();
    segments = 0;
    seconds = 0;
  }
};

namespace {

// Huge pages on the node, per size, from sysfs (hugepages-2048kB/{nr,free}_hugepages).
void ReadNode(const std::string& dir, std::map<std::string, double>& total,
              std::map<std::string, double>& free) {
  std::unique_ptr<DIR, int (*)(DIR*)> d(opendir(dir.c_str()), closedir);
  if (!d) return;
  auto read_number = [](const std::string& path, double* out) {
    std::ifstream in(path);
    uint64_t v = 0;
    if (!(in >> v)) return false;
    *out = static_cast<double>(v);
    return true;
  };
  auto add = [](std::map<std::string, double>& m, const std::string& size, double v, Fam f) {
    auto [it, inserted] = m.try_emplace(size, v);
    Fold(it->second, v, kFamilies[f].merge, inserted);
  };
  while (dirent* e = readdir(d.get())) {
    absl::string_view n(e->d_name);
    if (!absl::ConsumePrefix(&n, "hugepages-") || !absl::ConsumeSuffix(&n, "kB")) continue;
    uint64_t kb = 0;
    if (!absl::SimpleAtoi(n, &kb) || kb == 0) continue;
    std::string size = kb % (1024 * 1024) == 0 ? absl::StrCat(kb / (1024 * 1024), "GiB")
                       : kb % 1024 == 0        ? absl::StrCat(kb / 1024, "MiB")
                                               : absl::StrCat(kb, "KiB");
    std::string base = absl::StrCat(dir, "/", e->d_name, "/");
    double v = 0;
    if (read_number(base + "nr_hugepages", &v)) add(total, size, v, kNodeHugepages);
    if (read_number(base + "free_hugepages", &v)) add(free, size, v, kNodeHugepagesFree);
  }
}

}  // namespace

SegmentCollector::SegmentCollector(CollectorOptions options) : options_(std::move(options)) {
  // Every known reason starts at 0, so rate() and alerts work before the first error.
  absl::MutexLock lock(&mu_);
  for (const char* reason :
       {segment_error::kOpen, segment_error::kSymlink, segment_error::kNotRegular,
        segment_error::kForeignOwner, segment_error::kTruncated, segment_error::kTooLarge,
        segment_error::kRead, segment_error::kBadMagic, segment_error::kBadVersion,
        segment_error::kBadLayout, segment_error::kBadPoolCount, segment_error::kBadPool,
        segment_error::kUidMismatch})
    errors_[reason] = 0;
}

void SegmentCollector::ReadAll(Read& read) const {
  auto started = std::chrono::steady_clock::now();
  std::set<std::string> dead_now;
  const uint64_t now_ns = MonotonicNow();

  int dirfd = open(options_.run_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  DIR* dir = dirfd >= 0 ? fdopendir(dirfd) : nullptr;
  if (dir == nullptr) {
    int err = errno;
    if (dirfd >= 0) close(dirfd);
    // A missing run directory just means no process has run yet; anything else is an error.
    if (err != ENOENT) ++errors_["run_dir"];
  } else {
    std::vector<std::string> names;
    while (dirent* e = readdir(dir)) {
      std::string name = e->d_name;
      // Hidden names are segments still being created (see StatsSegment::Create).
      if (name.empty() || name[0] == '.' || !absl::EndsWith(name, ".seg")) continue;
      names.push_back(std::move(name));
    }
    // Call sites are for `dmashim stat --sites`, not metrics; one buffer serves every segment.
    ReadOptions read_options{.sites = false, .reuse = nullptr};
    for (const std::string& name : names) {
      absl::StatusOr<Snapshot> snap = ReadSegment(dirfd, name, options_.reader_euid,
                                                  std::move(read_options));
      if (!snap.ok()) {
        ++errors_[ErrorReason(snap.status())];
        read_options = {.sites = false, .reuse = nullptr};
        continue;
      }
      absl::Cleanup give_back = [&] { read_options.reuse = std::move(snap->data); };
      bool alive = !snap->exited &&
                   ProcessAlive(snap->pid, snap->start_time_ticks, options_.proc_root);
      if (!alive) {
        if (exported_dead_.count(name) != 0) {
          // Its last values went out at the previous scrape.
          if (unlinkat(dirfd, name.c_str(), 0) == 0) ++reaped_;
          else ++errors_["reap_failed"];
          continue;
        }
        dead_now.insert(name);
      }
      ++read.segments;
      SeriesLabels base;
      base.Add("comm", CleanLabel(snap->comm));
      if (options_.pid_label) base.Add("pid", absl::StrCat(snap->pid));
      auto [process, first] = read.processes.Find(base);
      FoldProcess(*process, *snap, alive, first);
      for (const PoolStats* pool : snap->pools) {
        SeriesLabels labels = base;
        labels.Add("pool", CleanLabel(pool->name));
        auto [agg, new_pool] = read.pools.Find(labels);
        FoldPool(*agg, *pool, {alive, now_ns}, new_pool);
      }
      std::vector<std::string>& exes = process->exes;
      std::string exe = CleanLabel(snap->exe);
      auto at = std::lower_bound(exes.begin(), exes.end(), exe);
      if (at == exes.end() || *at != exe) exes.insert(at, std::move(exe));
    }
    closedir(dir);
  }
  exported_dead_ = std::move(dead_now);
  ReadNode(options_.hugepages_dir, read.node_total, read.node_free);
  read.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
}

void SegmentCollector::Emit(const Read& read, MetricSink& sink) const {
  static const SeriesLabels kNone;
  const std::vector<const ProcessAgg*> processes = read.processes.Sorted();
  const std::vector<const PoolAgg*> pools = read.pools.Sorted();
  for (const Family& f : kFamilies) {
    sink.BeginFamily(f.desc);
    switch (f.scope) {
      case Scope::kProcess:
        for (const ProcessAgg* p : processes) {
          if (f.id == kPassthroughCalls) {
            for (size_t i = 0; i < std::size(p->passthrough); ++i)
              sink.Sample(p->labels, "call", kPassCallNames[i], p->passthrough[i]);
          } else if (f.id == kProcessInfo) {
            for (const std::string& exe : p->exes) sink.Sample(p->labels, "exe", exe, 1.0);
          } else if (f.id == kProcessAlive) {
            sink.Sample(p->labels, "", "", p->alive);
          } else if (f.id == kHooksFiring) {
            for (size_t i = 0; i < std::size(p->hooks); ++i)
              if (p->hooks[i]) sink.Sample(p->labels, "family", kHookFamilyNames[i], *p->hooks[i]);
          } else if (f.id == kConfigErrors) {
            sink.Sample(p->labels, "", "", p->config_errors);
          } else if (f.id == kSitesDropped) {
            sink.Sample(p->labels, "", "", p->sites_dropped);
          }
        }
        break;
      case Scope::kPool:
      case Scope::kDmaPool: {
        if (f.desc.type == H) {
          uint64_t cumulative[kWaitBuckets];
          for (const PoolAgg* p : pools) {
            uint64_t sum = 0;
            for (size_t i = 0; i < kWaitBuckets; ++i) cumulative[i] = sum += p->buckets[i];
            sink.Histogram(p->labels, cumulative, p->wait_sum);
          }
          break;
        }
        size_t series[kPoolSeriesCount], n = 0;
        for (size_t i = 0; i < kPoolSeriesCount; ++i)
          if (kPoolSeries[i].family == f.id) series[n++] = i;
        for (const PoolAgg* p : pools) {
          if (f.scope == Scope::kDmaPool && !p->dma) continue;
          for (size_t k = 0; k < n; ++k) {
            const PoolSeries& s = kPoolSeries[series[k]];
            sink.Sample(p->labels, s.extra_name, s.extra_value, p->values[series[k]]);
          }
        }
        break;
      }
      case Scope::kNode:
        for (const auto& [size, v] : f.id == kNodeHugepages ? read.node_total : read.node_free)
          sink.Sample(kNone, "size", size, v);
        break;
      case Scope::kExporter:
        if (f.id == kExporterSegments) {
          sink.Sample(kNone, "", "", static_cast<double>(read.segments));
        } else if (f.id == kSegmentErrors) {
          for (const auto& [reason, n] : errors_)
            sink.Sample(kNone, "reason", reason, static_cast<double>(n));
        } else if (f.id == kSegmentsReaped) {
          sink.Sample(kNone, "", "", static_cast<double>(reaped_));
        } else if (f.id == kScrapeDuration) {
          sink.Sample(kNone, "", "", read.seconds);
        }
        break;
    }
  }
}

SegmentCollector::~SegmentCollector() = default;

void SegmentCollector::Scrape(MetricSink& sink) const {
  absl::MutexLock lock(&mu_);
  if (read_ == nullptr) read_ = std::make_unique<Read>();
  read_->Clear();
  ReadAll(*read_);
  Emit(*read_, sink);
}

void SegmentCollector::ScrapeText(TextSink& out) const {
  out.Clear();
  Scrape(out);
}

std::vector<prometheus::MetricFamily> SegmentCollector::Collect() const {
  FamilySink sink;
  Scrape(sink);
  return sink.Take();
}

std::string SerializeText(const std::vector<prometheus::MetricFamily>& families) {
  return prometheus::TextSerializer().Serialize(families);
}

}  // namespace dmashim
