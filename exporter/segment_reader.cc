#include "exporter/segment_reader.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstddef>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace dmashim {
namespace {

absl::Status Bad(const char* reason, absl::string_view detail) {
  return absl::InvalidArgumentError(absl::StrCat(reason, ": ", detail));
}
absl::Status Unavailable(const char* reason, absl::string_view detail) {
  return absl::UnavailableError(absl::StrCat(reason, ": ", detail));
}

// Copies a fixed-size char field that the writer should have NUL-terminated (but may not have).
std::string FixedString(const char* field, size_t cap) { return std::string(field, strnlen(field, cap)); }

// Reads exactly `len` bytes unless the file ends first. Returns the count read or -1.
ssize_t ReadFully(int fd, void* buf, size_t len) {
  size_t done = 0;
  while (done < len) {
    ssize_t r = read(fd, static_cast<char*>(buf) + done, len - done);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return -1;
    if (r == 0) break;
    done += static_cast<size_t>(r);
  }
  return static_cast<ssize_t>(done);
}

absl::Status CheckHeader(const SegmentHeader& h) {
  if (h.magic != kSegmentMagic) return Bad(segment_error::kBadMagic, absl::StrCat("magic ", h.magic));
  if (h.version != kSegmentVersion)
    return Bad(segment_error::kBadVersion,
               absl::StrCat("version ", h.version, ", this reader knows ", kSegmentVersion));
  if (h.header_size != sizeof(SegmentHeader) || h.pool_stats_size != sizeof(PoolStats) ||
      h.pool_stats_version != kPoolStatsVersion || h.pool_capacity != kSegmentPoolCapacity ||
      h.site_capacity != kSegmentSiteCapacity || h.site_size != sizeof(CallSite) ||
      h.file_size != sizeof(SegmentFile))
    return Bad(segment_error::kBadLayout, "header sizes differ from this reader's");
  return absl::OkStatus();
}

// Validates what the segment says beyond its header, filling `snap`.
absl::Status Interpret(SegmentFile& f, bool sites, Snapshot& snap) {
  const SegmentProcess& p = f.process;
  if (p.pid <= 0) return Bad(segment_error::kBadLayout, absl::StrCat("pid ", p.pid));
  if (p.uid != snap.file_uid)
    return Bad(segment_error::kUidMismatch,
               absl::StrCat("written by uid ", p.uid, ", file owned by ", snap.file_uid));
  snap.pid = p.pid;
  snap.uid = p.uid;
  snap.start_time_ticks = p.start_time_ticks;
  snap.comm = FixedString(p.comm, sizeof p.comm);
  snap.exe = FixedString(p.exe, sizeof p.exe);
  snap.cmdline = FixedString(p.cmdline, sizeof p.cmdline);
  snap.session = FixedString(p.session, sizeof p.session);
  snap.exited = p.exited.load(std::memory_order_relaxed) != 0;
  snap.exit_unix_ns = p.exit_unix_ns.load(std::memory_order_relaxed);

  for (size_t i = 0; i < std::size(snap.passthrough); ++i)
    snap.passthrough[i] = f.counters.passthrough[i].load(std::memory_order_relaxed);
  snap.config_errors = f.counters.config_errors.load(std::memory_order_relaxed);
  snap.sites_dropped = f.counters.sites_dropped.load(std::memory_order_relaxed);
  for (size_t i = 0; i < std::size(snap.hooks); ++i) {
    uint32_t v = f.counters.hooks[i].load(std::memory_order_relaxed);
    snap.hooks[i] = v <= static_cast<uint32_t>(HookState::kNotFiring) ? static_cast<HookState>(v)
                                                                        : HookState::kUnknown;
  }

  uint32_t pools = f.pool_count.load(std::memory_order_relaxed);
  if (pools > kSegmentPoolCapacity)
    return Bad(segment_error::kBadPoolCount, absl::StrCat(pools, " pools"));
  for (uint32_t i = 0; i < pools; ++i) {
    PoolStats& s = f.pools[i];
    s.name[kPoolNameMax - 1] = '\0';  // our copy: terminating it is safe
    if (s.name[0] == '\0') return Bad(segment_error::kBadPool, absl::StrCat("pool ", i, " unnamed"));
    if (s.kind != static_cast<uint32_t>(PoolKind::kMempool) &&
        s.kind != static_cast<uint32_t>(PoolKind::kDmaPool))
      return Bad(segment_error::kBadPool, absl::StrCat("pool ", i, " kind ", s.kind));
    snap.pools.push_back(&s);
  }

  if (!sites) return absl::OkStatus();
  // A slot may be mid-claim (hash set, not ready) or garbage: skip rather than refuse, so one
  // bad site never hides the pools.
  for (const CallSite& site : f.sites) {
    if (site.hash.load(std::memory_order_relaxed) == 0 ||
        site.ready.load(std::memory_order_relaxed) != 1 || site.pool_index >= pools ||
        site.npcs > kSiteMaxPcs)
      continue;
    snap.sites.push_back(SiteSnapshot{site.pool_index,
                                      std::vector<uint64_t>(site.pcs, site.pcs + site.npcs),
                                      site.count.load(std::memory_order_relaxed),
                                      site.wait_ns.load(std::memory_order_relaxed),
                                      site.failures.load(std::memory_order_relaxed)});
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<Snapshot> ReadSegment(int dirfd, const std::string& name, uid_t reader_euid,
                                     ReadOptions options) {
  // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer.
  int fd = openat(dirfd, name.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
  if (fd < 0) {
    int e = errno;
    if (e == ELOOP) return Bad(segment_error::kSymlink, name);
    return Unavailable(segment_error::kOpen, absl::StrCat(name, ": ", strerror(e)));
  }
  struct FdCloser {
    int fd;
    ~FdCloser() { close(fd); }
  } closer{fd};

  struct stat st;
  if (fstat(fd, &st) != 0) return Unavailable(segment_error::kOpen, strerror(errno));
  if (!S_ISREG(st.st_mode)) return Bad(segment_error::kNotRegular, name);
  if (reader_euid != 0 && st.st_uid != reader_euid)
    return Bad(segment_error::kForeignOwner, absl::StrCat(name, " owned by uid ", st.st_uid));
  if (st.st_size < static_cast<off_t>(sizeof(SegmentFile)))
    return Bad(segment_error::kTruncated, absl::StrCat(name, ": ", st.st_size, " bytes"));
  if (st.st_size > static_cast<off_t>(sizeof(SegmentFile)))
    return Bad(segment_error::kTooLarge, absl::StrCat(name, ": ", st.st_size, " bytes"));

  // The copy is an object of the layout type, so its atomics can be loaded normally; nobody else
  // ever touches it. read() writes its bytes (the atomics are lock-free, i.e. plain words).
  Snapshot snap;
  snap.file_name = name;
  snap.file_uid = st.st_uid;
  if (options.reuse != nullptr && options.reuse.use_count() == 1) snap.data = std::move(options.reuse);
  else snap.data = std::make_shared<SegmentFile>();
  // Without the sites, only the pools in use: everything up to the pool table, then pool_count
  // records (bounded by the capacity; Interpret refuses a count beyond it).
  size_t want = options.sites ? sizeof(SegmentFile) : offsetof(SegmentFile, pools);
  ssize_t got = ReadFully(fd, static_cast<void*>(snap.data.get()), want);
  if (!options.sites && got == static_cast<ssize_t>(want)) {
    const size_t pools = std::min<size_t>(
        snap.data->pool_count.load(std::memory_order_relaxed), kSegmentPoolCapacity);
    const size_t more = pools * sizeof(PoolStats);
    const ssize_t got_pools = ReadFully(fd, static_cast<void*>(snap.data->pools), more);
    got = got_pools < 0 ? got_pools : got + got_pools;
    want += more;
  }
  if (got < 0) return Unavailable(segment_error::kRead, strerror(errno));
  // The file may have shrunk between fstat and read.
  if (static_cast<size_t>(got) < want)
    return Bad(segment_error::kTruncated, absl::StrCat(name, ": read ", got, " bytes"));

  if (absl::Status s = CheckHeader(snap.data->header); !s.ok()) return s;
  if (absl::Status s = Interpret(*snap.data, options.sites, snap); !s.ok()) return s;
  return snap;
}

std::string ErrorReason(const absl::Status& status) {
  absl::string_view msg = status.message();
  size_t colon = msg.find(':');
  if (colon == absl::string_view::npos || colon == 0) return segment_error::kOpen;
  return std::string(msg.substr(0, colon));
}

uint64_t ParseStartTime(absl::string_view stat_line) {
  // Field 2 (comm) is in parentheses and may contain anything, ')' included: fields are counted
  // from the last ')'; field 3 is the first after it, so starttime (22) is the 20th. Runs of
  // spaces separate like one.
  size_t paren = stat_line.rfind(')');
  if (paren == absl::string_view::npos) return 0;
  absl::string_view rest = stat_line.substr(paren + 1);
  int field = 2;
  while (!rest.empty()) {
    size_t start = rest.find_first_not_of(' ');
    if (start == absl::string_view::npos) break;
    rest.remove_prefix(start);
    size_t end = std::min(rest.find(' '), rest.size());
    if (++field == 22) {
      uint64_t v = 0;
      return absl::SimpleAtoi(rest.substr(0, end), &v) ? v : 0;
    }
    rest.remove_prefix(end);
  }
  return 0;
}

bool ProcessAlive(int32_t pid, uint64_t start_time_ticks, absl::string_view proc_root) {
  if (pid <= 0) return false;
  // Read with plain system calls: a scrape asks this once per segment, 1,000 times.
  int fd = open(absl::StrCat(proc_root, "/", pid, "/stat").c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  char buf[4096];  // a stat line is a few hundred bytes; field 22 comes early
  ssize_t got = ReadFully(fd, buf, sizeof buf);
  close(fd);
  return got > 0 &&
         ParseStartTime(absl::string_view(buf, static_cast<size_t>(got))) == start_time_ticks;
}

}  // namespace dmashim
