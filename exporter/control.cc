#include "exporter/control.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <optional>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "exporter/segment_reader.h"

namespace dmashim {
namespace {

CtlOutcome Fail(std::string msg) { return {1, std::move(msg)}; }

struct Found {
  std::string name;
  Snapshot snap;
};

// The live segment of `pid` (not exited, start time still running). Read as root would read it, so
// a segment of another user is found and then refused by the owner check, with a clear message.
std::optional<Found> FindLiveSegment(int dirfd, int32_t pid, uid_t* foreign_uid) {
  DIR* d = fdopendir(dup(dirfd));
  if (d == nullptr) return std::nullopt;
  std::optional<Found> out;
  while (dirent* e = readdir(d)) {
    const std::string name = e->d_name;
    if (name.empty() || name[0] == '.' || !absl::EndsWith(name, ".seg")) continue;
    if (!absl::StartsWith(name, absl::StrCat(pid, "."))) continue;
    struct stat st;
    if (fstatat(dirfd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 && st.st_uid != geteuid() &&
        geteuid() != 0) {
      *foreign_uid = st.st_uid;  // not ours to read, let alone to steer
      continue;
    }
    absl::StatusOr<Snapshot> snap = ReadSegment(dirfd, name, /*reader_euid=*/0);
    if (!snap.ok() || snap->pid != pid || snap->exited) continue;
    if (!ProcessAlive(snap->pid, snap->start_time_ticks)) continue;
    out = Found{name, *std::move(snap)};
    break;
  }
  closedir(d);
  return out;
}

bool RequesterGone(uint32_t requester) {
  return requester != 0 && kill(static_cast<pid_t>(requester), 0) != 0 && errno == ESRCH;
}

}  // namespace

CtlOutcome CtlResize(const std::string& run_dir, int32_t pid, const std::string& pool, int64_t n,
                     uid_t caller_euid, absl::Duration timeout) {
  if (run_dir.empty()) return Fail("dmashim ctl: no run directory (set DMASHIM_RUN_DIR or XDG_RUNTIME_DIR)");
  if (pool.empty() || pool.size() >= kPoolNameMax) return Fail("dmashim ctl: bad pool name");
  if (n < 0) return Fail("dmashim ctl: the reserve must be >= 0");
  int dirfd = open(run_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dirfd < 0) {
    return Fail(absl::StrCat("dmashim ctl: cannot open run directory ", run_dir, ": ", strerror(errno)));
  }
  struct DirCloser {
    int fd;
    ~DirCloser() { close(fd); }
  } dir_closer{dirfd};

  uid_t foreign = static_cast<uid_t>(-1);
  std::optional<Found> found = FindLiveSegment(dirfd, pid, &foreign);
  if (!found && foreign != static_cast<uid_t>(-1)) {
    return Fail(absl::StrCat("dmashim ctl: permission denied: process ", pid, " belongs to uid ",
                             foreign, "; only its owner or root may control it"));
  }
  if (!found) {
    return Fail(absl::StrCat("dmashim ctl: no running process ", pid, " under the shim in ", run_dir));
  }
  if (caller_euid != 0 && caller_euid != found->snap.uid) {
    return Fail(absl::StrCat("dmashim ctl: permission denied: process ", pid, " belongs to uid ",
                             found->snap.uid, "; only its owner or root may control it"));
  }
  bool has_pool = false;
  for (const PoolStats* p : found->snap.pools) has_pool |= pool == p->name;
  if (!has_pool) return Fail(absl::StrCat("dmashim ctl: process ", pid, " has no pool ", pool));

  // Open, then check that the name still is the file the reader verified (same inode, same owner).
  int fd = openat(dirfd, found->name.c_str(), O_RDWR | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
  if (fd < 0) return Fail(absl::StrCat("dmashim ctl: cannot open ", found->name, ": ", strerror(errno)));
  struct stat st;
  absl::StatusOr<Snapshot> again = ReadSegment(dirfd, found->name, 0);
  struct stat named;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size != static_cast<off_t>(sizeof(SegmentFile)) ||
      !again.ok() || fstatat(dirfd, found->name.c_str(), &named, AT_SYMLINK_NOFOLLOW) != 0 ||
      named.st_ino != st.st_ino || named.st_dev != st.st_dev || st.st_uid != found->snap.file_uid) {
    close(fd);
    return Fail(absl::StrCat("dmashim ctl: segment ", found->name, " changed while it was checked"));
  }
  void* mem = mmap(nullptr, sizeof(SegmentFile), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  close(fd);
  if (mem == MAP_FAILED) return Fail(absl::StrCat("dmashim ctl: mmap: ", strerror(errno)));
  struct Unmapper {
    void* p;
    ~Unmapper() { munmap(p, sizeof(SegmentFile)); }
  } unmapper{mem};
  SegmentControl& c = static_cast<SegmentFile*>(mem)->control;

  const absl::Time deadline = absl::Now() + timeout;
  const uint32_t me = static_cast<uint32_t>(getpid());
  // Claim the control area; another ctl may hold it for a moment, a dead one is taken over.
  for (;;) {
    uint32_t cur = 0;
    if (c.requester.compare_exchange_strong(cur, me, std::memory_order_acq_rel)) break;
    if (RequesterGone(cur) && c.requester.compare_exchange_strong(cur, me, std::memory_order_acq_rel)) break;
    if (absl::Now() >= deadline) {
      return Fail(absl::StrCat("dmashim ctl: process ", pid, "'s control area is busy (requester ", cur, ")"));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  c.command = static_cast<uint32_t>(ControlCommand::kResize);
  memset(c.pool, 0, sizeof c.pool);
  memcpy(c.pool, pool.data(), pool.size());
  c.value.store(n, std::memory_order_relaxed);
  const uint64_t seq = std::max(c.request_seq.load(std::memory_order_relaxed),
                                c.response_seq.load(std::memory_order_relaxed)) + 1;
  c.request_seq.store(seq, std::memory_order_release);

  bool answered = false;
  while (absl::Now() < deadline) {
    if (c.response_seq.load(std::memory_order_acquire) == seq) {
      answered = true;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  const int status = c.status.load(std::memory_order_relaxed);
  const int64_t result = c.result_reserve.load(std::memory_order_relaxed);
  c.requester.store(0, std::memory_order_release);
  if (!answered) {
    return Fail(absl::StrCat("dmashim ctl: process ", pid, " did not answer within ",
                             absl::FormatDuration(timeout),
                             " (stopped, or its maintenance thread is not running)"));
  }
  switch (status) {
    case 0:
      return {0, absl::StrFormat("pid %d pool %s: reserve is now %d", pid, pool, result)};
    case EAGAIN:
      return Fail(absl::StrFormat(
          "pid %d pool %s: partial grow: the pool holds %d of the %d elements asked for (the "
          "source ran out; the shortfall is retried in the background)",
          pid, pool, result, n));
    case ENOENT:
      return Fail(absl::StrFormat("pid %d: no pool %s", pid, pool));
    case EINVAL:
      return Fail(absl::StrFormat("pid %d pool %s: reserve %d refused (negative, above the pool's "
                                  "max, or too large); reserve stays %d",
                                  pid, pool, n, result));
    default:
      return Fail(absl::StrFormat("pid %d pool %s: resize failed: %s", pid, pool, strerror(status)));
  }
}

}  // namespace dmashim
