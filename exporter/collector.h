// The exporter's collector: at every scrape it scans the run directory, reads each stats segment
// (exporter/segment_reader.h), merges what it read, and writes the series into a MetricSink
// (exporter/metric_sink.h): the text sink for /metrics and --once, MetricFamily objects for the
// prometheus::Collectable interface. Which series exist, their HELP and TYPE, labels and merging
// are decided here and only here. Nothing is cached between scrapes except what reaping and the
// error counters need, so a restarted application, a new process or a removed segment shows up on
// the very next scrape.
//
// Series with equal labels (two processes with the same comm when the pid label is off, or a
// process and its pre-exec segment) are merged: counters and most gauges add up; the high-water
// mark, the longest wait, process_info, process_alive and hooks_firing take the maximum.
//
// Lifecycle of a segment whose process is gone (exited flag set, or pid/start time no longer
// running): exported one last time, then unlinked at the following scrape (reaped).
#pragma once

#include <sys/types.h>

#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "exporter/metric_sink.h"
#include "prometheus/collectable.h"
#include "prometheus/metric_family.h"

namespace dmashim {

struct CollectorOptions {
  std::string run_dir;                                  // the directory to scan
  bool pid_label = true;                                // false: --no-pid-label
  std::string hugepages_dir = "/sys/kernel/mm/hugepages";  // tests point this elsewhere
  std::string proc_root = "/proc";
  uid_t reader_euid = 0;  // the exporter's euid: non-root refuses other users' segments
};

class SegmentCollector : public prometheus::Collectable {
 public:
  explicit SegmentCollector(CollectorOptions options);
  ~SegmentCollector() override;

  // One scrape into `sink`: reads every segment, reaps the dead ones already exported, never
  // throws on a bad segment (it is skipped and counted). Thread-safe; scrapes are serialised.
  void Scrape(MetricSink& sink) const;

  // One scrape as exposition text: `out` is cleared, then filled (its buffer is reused).
  void ScrapeText(TextSink& out) const;

  // One scrape as prometheus-cpp objects (a Scrape into a FamilySink).
  std::vector<prometheus::MetricFamily> Collect() const override;

 private:
  struct Read;  // what one scrape read and merged (collector.cc)
  void ReadAll(Read& read) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Emit(const Read& read, MetricSink& sink) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  CollectorOptions options_;
  mutable absl::Mutex mu_;
  // Cumulative over the exporter's life, so they are counters.
  mutable std::map<std::string, uint64_t> errors_ ABSL_GUARDED_BY(mu_);
  mutable uint64_t reaped_ ABSL_GUARDED_BY(mu_) = 0;
  // Segments of dead processes exported at the last scrape: reaped at the next.
  mutable std::set<std::string> exported_dead_ ABSL_GUARDED_BY(mu_);
  // The last scrape's reading, cleared and refilled at the next (its tables keep their size).
  mutable std::unique_ptr<Read> read_ ABSL_GUARDED_BY(mu_);
};

// prometheus-cpp's text exposition of `families` (the same text a TextSink writes).
std::string SerializeText(const std::vector<prometheus::MetricFamily>& families);

}  // namespace dmashim
