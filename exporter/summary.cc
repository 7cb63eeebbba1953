#include "exporter/summary.h"

#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/match.h"

namespace dmashim {

std::vector<Snapshot> ReadAllSegments(const std::string& run_dir) {
  std::vector<Snapshot> out;
  int dirfd = open(run_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dirfd < 0) return out;
  DIR* d = fdopendir(dup(dirfd));
  if (d == nullptr) {
    close(dirfd);
    return out;
  }
  while (dirent* ent = readdir(d)) {
    const std::string name = ent->d_name;
    if (name.empty() || name[0] == '.' || !absl::EndsWith(name, ".seg")) continue;
    auto snap = ReadSegment(dirfd, name, geteuid());
    if (snap.ok()) out.push_back(*std::move(snap));
  }
  closedir(d);
  close(dirfd);
  std::sort(out.begin(), out.end(),
            [](const Snapshot& a, const Snapshot& b) { return a.pid < b.pid; });
  return out;
}

std::string ResolveRunDir(const std::string& configured) {
  if (const char* env = getenv("DMASHIM_RUN_DIR"); env != nullptr && env[0] != '\0') return env;
  if (!configured.empty()) return configured;
  if (geteuid() == 0) return "/run/dmashim";
  if (const char* xdg = getenv("XDG_RUNTIME_DIR"); xdg != nullptr && xdg[0] != '\0') {
    return absl::StrCat(xdg, "/dmashim");
  }
  return "";
}

namespace {
double Seconds(uint64_t ns) { return static_cast<double>(ns) / 1e9; }
uint64_t Load(const Counter& c) { return c.load(std::memory_order_relaxed); }
int64_t Load(const Gauge& g) { return g.load(std::memory_order_relaxed); }

// Longest wait recorded in the histogram: the upper bound of the highest non-empty bucket.
std::string MaxWaitBucket(const PoolStats& s) {
  for (size_t i = kWaitBuckets; i-- > 0;) {
    if (Load(s.wait_buckets[i]) == 0) continue;
    if (i == kWaitBuckets - 1) return absl::StrFormat(">%gs", Seconds(kWaitBucketBoundsNs[i - 1]));
    return absl::StrFormat("<=%gs", Seconds(kWaitBucketBoundsNs[i]));
  }
  return "-";
}
}  // namespace

std::string FormatSummary(const std::vector<Snapshot>& snapshots) {
  std::string out;
  for (const Snapshot& snap : snapshots) {
    absl::StrAppendFormat(&out, "dmashim: pid %d (%s) %s\n", snap.pid, snap.comm,
                          snap.exited ? "exited" : "running, killed, or ended without exit()");
    absl::StrAppendFormat(&out, "  %-14s %8s %8s %8s | %6s %7s %5s %6s | %9s %8s | %9s %6s %5s\n",
                          "pool", "source", "reserve", "waited", "fast", "timeout", "intr",
                          "source", "blocked_s", "max_wait", "reserve", "in_use", "peak");
    for (const PoolStats* p : snap.pools) {
      const PoolStats& s = *p;
      const uint64_t allocs = Load(s.alloc_source) + Load(s.alloc_reserve) + Load(s.alloc_waited);
      const uint64_t fails = Load(s.fail_fast) + Load(s.fail_timeout) +
                             Load(s.fail_interrupted) + Load(s.fail_source);
      if (allocs == 0 && fails == 0 && Load(s.reserve_target) == 0 && Load(s.wait_count) == 0) {
        continue;  // an idle pool (the default record of a program that made no huge-page call)
      }
      absl::StrAppendFormat(
          &out, "  %-14s %8d %8d %8d | %6d %7d %5d %6d | %9.3f %8s | %4d/%-4d %6d %5d\n", s.name,
          Load(s.alloc_source), Load(s.alloc_reserve), Load(s.alloc_waited), Load(s.fail_fast),
          Load(s.fail_timeout), Load(s.fail_interrupted), Load(s.fail_source),
          Seconds(Load(s.wait_sum_ns)), MaxWaitBucket(s), ReserveLevel(s),
          Load(s.reserve_target), InUse(s), Load(s.high_water));
    }
  }
  if (snapshots.empty()) out = "dmashim: no stats segment found (nothing ran under the shim?)\n";
  return out;
}

}  // namespace dmashim
