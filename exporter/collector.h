// The exporter's one prometheus::Collectable: at every scrape it scans the run directory, reads
// each stats segment (exporter/segment_reader.h), and turns them into metric families. Nothing is
// cached between scrapes except what reaping and the error counters need, so a restarted
// application, a new process or a removed segment shows up on the very next scrape.
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

  // One scrape: reads every segment, reaps the dead ones already exported, never throws on a bad
  // segment (it is skipped and counted). Thread-safe; scrapes are serialised.
  std::vector<prometheus::MetricFamily> Collect() const override;

 private:
  CollectorOptions options_;
  mutable absl::Mutex mu_;
  // Cumulative over the exporter's life, so they are counters.
  mutable std::map<std::string, uint64_t> errors_ ABSL_GUARDED_BY(mu_);
  mutable uint64_t reaped_ ABSL_GUARDED_BY(mu_) = 0;
  // Segments of dead processes exported at the last scrape: reaped at the next.
  mutable std::set<std::string> exported_dead_ ABSL_GUARDED_BY(mu_);
};

// The text exposition of `families` (what /metrics serves; --once prints it).
std::string SerializeText(const std::vector<prometheus::MetricFamily>& families);

}  // namespace dmashim
