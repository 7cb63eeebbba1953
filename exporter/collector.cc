#include "exporter/collector.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <time.h>
#include <unistd.h>

#include <chrono>
#include <deque>
#include <fstream>
#include <limits>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "exporter/segment_reader.h"
#include "prometheus/text_serializer.h"

namespace dmashim {
namespace {

using prometheus::ClientMetric;
using prometheus::MetricType;
using Labels = std::vector<ClientMetric::Label>;

enum class Merge { kSum, kMax };

// One metric family being assembled; samples with equal labels are merged (see collector.h).
class Family {
 public:
  Family(std::string name, std::string help, MetricType type, Merge merge)
      : name_(std::move(name)), help_(std::move(help)), type_(type), merge_(merge) {}

  void Add(const Labels& labels, double v) {
    auto [it, inserted] = values_.try_emplace(labels, v);
    if (inserted) return;
    it->second = merge_ == Merge::kSum ? it->second + v : std::max(it->second, v);
  }

  // `buckets` are the non-cumulative counts of PoolStats::wait_buckets.
  void AddHistogram(const Labels& labels, const uint64_t (&buckets)[kWaitBuckets], double sum) {
    Hist& h = hists_[labels];
    for (size_t i = 0; i < kWaitBuckets; ++i) h.buckets[i] += buckets[i];
    h.sum += sum;
  }

  bool empty() const { return values_.empty() && hists_.empty(); }

  prometheus::MetricFamily Build() const {
    prometheus::MetricFamily f{name_, help_, type_, {}};
    for (const auto& [labels, v] : values_) {
      ClientMetric m;
      m.label = labels;
      if (type_ == MetricType::Counter) m.counter.value = v;
      else m.gauge.value = v;
      f.metric.push_back(std::move(m));
    }
    for (const auto& [labels, h] : hists_) {
      ClientMetric m;
      m.label = labels;
      uint64_t cumulative = 0;
      for (size_t i = 0; i < kWaitBuckets; ++i) {
        cumulative += h.buckets[i];
        double le = i < std::size(kWaitBucketBoundsNs) ? kWaitBucketBoundsNs[i] / 1e9
                                                        : std::numeric_limits<double>::infinity();
        m.histogram.bucket.push_back({cumulative, le});
      }
      // The count is the +Inf bucket by construction, whatever the writer's wait_count says.
      m.histogram.sample_count = cumulative;
      m.histogram.sample_sum = h.sum;
      f.metric.push_back(std::move(m));
    }
    return f;
  }

 private:
  struct Hist {
    uint64_t buckets[kWaitBuckets] = {};
    double sum = 0;
  };
  std::string name_, help_;
  MetricType type_;
  Merge merge_;
  std::map<Labels, double> values_;
  std::map<Labels, Hist> hists_;
};

// All families of one scrape, in exposition order.
class Families {
 public:
  Family& Get(const char* name, const char* help, MetricType type, Merge merge = Merge::kSum) {
    auto it = index_.find(name);
    if (it != index_.end()) return list_[it->second];
    index_.emplace(name, list_.size());
    list_.emplace_back(name, help, type, merge);
    return list_.back();
  }
  std::vector<prometheus::MetricFamily> Build() const {
    std::vector<prometheus::MetricFamily> out;
    for (const Family& f : list_)
      if (!f.empty()) out.push_back(f.Build());
    return out;
  }

 private:
  std::map<std::string, size_t> index_;
  std::deque<Family> list_;  // a deque: references from Get() stay valid
};

// Label values come from untrusted files; Prometheus rejects a scrape with invalid UTF-8, so
// anything but printable ASCII becomes '?'. (comm and pool names are ASCII in practice.)
std::string CleanLabel(const std::string& s) {
  std::string out = s;
  for (char& c : out)
    if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) >= 0x7f) c = '?';
  return out;
}

Labels With(Labels l, const char* name, std::string value) {
  l.push_back({name, std::move(value)});
  return l;
}

uint64_t MonotonicNow() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000u + static_cast<uint64_t>(ts.tv_nsec);
}

double Load(const Counter& c) { return static_cast<double>(c.load(std::memory_order_relaxed)); }
double Load(const Gauge& g) { return static_cast<double>(g.load(std::memory_order_relaxed)); }

void EmitPool(Families& fam, const Labels& base, const PoolStats& s, bool alive, uint64_t now_ns) {
  constexpr auto C = MetricType::Counter;
  constexpr auto G = MetricType::Gauge;
  Family& allocs = fam.Get("dmashim_allocations_total",
                           "Allocations served, by result: source (at once from the kernel), "
                           "reserve (the pool's own free elements), waited (after blocking)", C);
  allocs.Add(With(base, "result", "source"), Load(s.alloc_source));
  allocs.Add(With(base, "result", "reserve"), Load(s.alloc_reserve));
  allocs.Add(With(base, "result", "waited"), Load(s.alloc_waited));
  Family& fails = fam.Get("dmashim_failures_total", "Failed allocations, by reason", C);
  fails.Add(With(base, "reason", "fail_fast"), Load(s.fail_fast));
  fails.Add(With(base, "reason", "timeout"), Load(s.fail_timeout));
  fails.Add(With(base, "reason", "interrupted"), Load(s.fail_interrupted));
  fails.Add(With(base, "reason", "source"), Load(s.fail_source));
  fam.Get("dmashim_frees_total", "Elements freed back to the pool", C).Add(base, Load(s.frees));

  uint64_t buckets[kWaitBuckets];
  for (size_t i = 0; i < kWaitBuckets; ++i)
    buckets[i] = s.wait_buckets[i].load(std::memory_order_relaxed);
  fam.Get("dmashim_wait_seconds", "Time allocations spent blocked", MetricType::Histogram)
      .AddHistogram(base, buckets, Load(s.wait_sum_ns) / 1e9);

  // A dead process has no waiters, whatever its last gauges said.
  uint64_t oldest = 0;
  for (const Counter& w : s.waiter_start_ns) {
    uint64_t t = w.load(std::memory_order_relaxed);
    if (t != 0 && (oldest == 0 || t < oldest)) oldest = t;
  }
  double longest = alive && oldest != 0 && oldest < now_ns ? (now_ns - oldest) / 1e9 : 0.0;
  fam.Get("dmashim_blocked_threads", "Threads blocked in the pool now", G)
      .Add(base, alive ? Load(s.blocked_now) : 0.0);
  fam.Get("dmashim_longest_wait_seconds", "Age of the oldest wait in progress", G, Merge::kMax)
      .Add(base, longest);

  fam.Get("dmashim_reserve_elements", "Free elements the pool holds now", G)
      .Add(base, Load(s.reserve_level));
  fam.Get("dmashim_reserve_target_elements", "Configured reserve (min_nr)", G)
      .Add(base, Load(s.reserve_target));
  fam.Get("dmashim_elements_held", "Elements the pool holds, free and in use", G)
      .Add(base, Load(s.elements_total));
  fam.Get("dmashim_in_use_elements", "Elements handed out", G).Add(base, Load(s.in_use));
  fam.Get("dmashim_in_use_bytes", "Bytes handed out", G).Add(base, Load(s.bytes_in_use));
  fam.Get("dmashim_high_water_elements", "Peak of elements in use", G, Merge::kMax)
      .Add(base, Load(s.high_water));
  double waste = Load(s.bytes_in_use) - Load(s.requested_bytes_in_use);
  fam.Get("dmashim_rounding_waste_bytes", "Bytes handed out beyond what callers asked for", G)
      .Add(base, waste > 0 ? waste : 0.0);
  fam.Get("dmashim_element_bytes", "Size of one element (DmaPool: one block)", G, Merge::kMax)
      .Add(base, static_cast<double>(s.element_size));

  fam.Get("dmashim_source_calls_total", "Calls into the source allocator (the kernel)", C)
      .Add(base, Load(s.source_calls));
  fam.Get("dmashim_source_seconds_total", "Time spent in the source allocator", C)
      .Add(base, Load(s.source_ns) / 1e9);
  fam.Get("dmashim_source_failures_total", "Source allocator calls that failed", C)
      .Add(base, Load(s.source_failures));
  fam.Get("dmashim_source_releases_total", "Elements given back to the source", C)
      .Add(base, Load(s.source_releases));

  if (s.kind == static_cast<uint32_t>(PoolKind::kDmaPool)) {
    fam.Get("dmashim_dma_active_blocks", "DmaPool blocks in use", G)
        .Add(base, Load(s.dma_active_blocks));
    fam.Get("dmashim_dma_total_blocks", "DmaPool blocks carved", G)
        .Add(base, Load(s.dma_total_blocks));
    fam.Get("dmashim_dma_pages", "Pages the DmaPool carves blocks from", G)
        .Add(base, Load(s.dma_pages));
  }
}

void EmitProcess(Families& fam, const Labels& base, const Snapshot& snap, bool alive) {
  constexpr auto C = MetricType::Counter;
  constexpr auto G = MetricType::Gauge;
  Family& pass = fam.Get("dmashim_passthrough_calls_total",
                         "Calls passed straight to the kernel, by call", C);
  for (size_t i = 0; i < std::size(snap.passthrough); ++i)
    pass.Add(With(base, "call", kPassCallNames[i]), static_cast<double>(snap.passthrough[i]));
  fam.Get("dmashim_process_info", "A process under the shim (value 1)", G, Merge::kMax)
      .Add(With(base, "exe", CleanLabel(snap.exe)), 1.0);
  fam.Get("dmashim_process_alive", "1 while the process runs, 0 for its last export", G,
          Merge::kMax)
      .Add(base, alive ? 1.0 : 0.0);
  Family& hooks = fam.Get("dmashim_hooks_firing",
                          "Self-check per interposition family: 1 hooks seen firing, 0 not "
                          "firing (absent: not checked yet)",
                          G, Merge::kMax);
  for (size_t i = 0; i < std::size(snap.hooks); ++i) {
    if (snap.hooks[i] == HookState::kUnknown) continue;
    hooks.Add(With(base, "family", kHookFamilyNames[i]),
              snap.hooks[i] == HookState::kFiring ? 1.0 : 0.0);
  }
  fam.Get("dmashim_config_errors_total", "Configuration errors found at start-up", C)
      .Add(base, static_cast<double>(snap.config_errors));
  fam.Get("dmashim_call_sites_dropped_total", "Slow-path events not recorded: call-site table full",
          C)
      .Add(base, static_cast<double>(snap.sites_dropped));
}

// Huge pages on the node, per size, from sysfs (hugepages-2048kB/{nr,free}_hugepages).
void EmitNode(Families& fam, const std::string& dir) {
  std::unique_ptr<DIR, int (*)(DIR*)> d(opendir(dir.c_str()), closedir);
  if (!d) return;
  auto read_number = [](const std::string& path, double* out) {
    std::ifstream in(path);
    uint64_t v = 0;
    if (!(in >> v)) return false;
    *out = static_cast<double>(v);
    return true;
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
    double total = 0, free = 0;
    if (read_number(base + "nr_hugepages", &total))
      fam.Get("dmashim_node_hugepages", "Huge pages in the node's pool, by page size",
              MetricType::Gauge)
          .Add({{"size", size}}, total);
    if (read_number(base + "free_hugepages", &free))
      fam.Get("dmashim_node_hugepages_free", "Huge pages free on the node, by page size",
              MetricType::Gauge)
          .Add({{"size", size}}, free);
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

std::vector<prometheus::MetricFamily> SegmentCollector::Collect() const {
  auto started = std::chrono::steady_clock::now();
  absl::MutexLock lock(&mu_);
  Families fam;
  size_t segments = 0;
  std::set<std::string> dead_now;
  uint64_t now_ns = MonotonicNow();

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
    for (const std::string& name : names) {
      absl::StatusOr<Snapshot> snap = ReadSegment(dirfd, name, options_.reader_euid);
      if (!snap.ok()) {
        ++errors_[ErrorReason(snap.status())];
        continue;
      }
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
      ++segments;
      Labels base{{"comm", CleanLabel(snap->comm)}};
      if (options_.pid_label) base.push_back({"pid", absl::StrCat(snap->pid)});
      EmitProcess(fam, base, *snap, alive);
      for (const PoolStats* pool : snap->pools)
        EmitPool(fam, With(base, "pool", CleanLabel(pool->name)), *pool, alive, now_ns);
    }
    closedir(dir);
  }
  exported_dead_ = std::move(dead_now);

  EmitNode(fam, options_.hugepages_dir);
  fam.Get("dmashim_exporter_segments", "Stats segments exported at this scrape", MetricType::Gauge)
      .Add({}, static_cast<double>(segments));
  Family& errs = fam.Get("dmashim_exporter_segment_errors_total",
                         "Segments skipped because they could not be read or were invalid, by "
                         "reason (counted at every scrape that meets them)",
                         MetricType::Counter);
  for (const auto& [reason, n] : errors_) errs.Add({{"reason", reason}}, static_cast<double>(n));
  fam.Get("dmashim_exporter_segments_reaped_total",
          "Segments of dead processes removed after their last export", MetricType::Counter)
      .Add({}, static_cast<double>(reaped_));
  std::chrono::duration<double> took = std::chrono::steady_clock::now() - started;
  fam.Get("dmashim_exporter_scrape_duration_seconds", "Time this scrape took to read all segments",
          MetricType::Gauge)
      .Add({}, took.count());
  return fam.Build();
}

std::string SerializeText(const std::vector<prometheus::MetricFamily>& families) {
  return prometheus::TextSerializer().Serialize(families);
}

}  // namespace dmashim
