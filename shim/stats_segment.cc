// The stats-segment writer. It runs inside the preloaded shim, in whatever state the host process
// is in, so: every system call is a raw syscall(2) (the shim intercepts mmap, open, ftruncate and
// would otherwise see its own calls), no stdio, no allocation, no exceptions; failures come back
// as an errno for the caller to report.
#include "shim/stats_segment.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <linux/fs.h>  // RENAME_NOREPLACE

namespace dmashim {
namespace {

// ---- raw system calls: -1 with errno on failure, like libc, but never through an interposer ----

int SysOpenAt(int dirfd, const char* path, int flags, mode_t mode = 0) {
  return static_cast<int>(syscall(SYS_openat, dirfd, path, flags, mode));
}
void SysClose(int fd) { syscall(SYS_close, fd); }
int SysFstat(int fd, struct stat* st) { return static_cast<int>(syscall(SYS_fstat, fd, st)); }
ssize_t SysRead(int fd, void* buf, size_t n) { return syscall(SYS_read, fd, buf, n); }
ssize_t SysPwrite(int fd, const void* buf, size_t n, off_t off) {
  return syscall(SYS_pwrite64, fd, buf, n, off);
}
int SysRenameNoReplace(int dirfd, const char* from, const char* to) {
  return static_cast<int>(syscall(SYS_renameat2, dirfd, from, dirfd, to, RENAME_NOREPLACE));
}
void* SysMmap(void* addr, size_t len, int prot, int flags, int fd) {
  long r = syscall(SYS_mmap, addr, len, prot, flags, fd, 0);
  return r == -1 ? MAP_FAILED : reinterpret_cast<void*>(r);
}

uint64_t RealtimeNs() {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);  // vDSO, not an intercepted call
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000u + static_cast<uint64_t>(ts.tv_nsec);
}

// ---- bounded string building (no snprintf: it may allocate and is not async-signal-safe) ----

// Appends `s` to the NUL-terminated `buf` of `cap` bytes. False when it does not fit.
bool Append(char* buf, size_t cap, const char* s) {
  size_t len = strnlen(buf, cap);
  size_t add = strlen(s);
  if (len + add + 1 > cap) return false;
  memcpy(buf + len, s, add + 1);
  return true;
}

bool AppendU64(char* buf, size_t cap, uint64_t v) {
  char digits[21];
  int i = sizeof digits - 1;
  digits[i] = '\0';
  do {
    digits[--i] = static_cast<char>('0' + v % 10);
    v /= 10;
  } while (v != 0);
  return Append(buf, cap, digits + i);
}

// Reads up to cap-1 bytes of a small /proc file, NUL-terminated. Returns the length or -1.
ssize_t ReadProcFile(const char* path, char* buf, size_t cap) {
  int fd = SysOpenAt(AT_FDCWD, path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  size_t len = 0;
  while (len + 1 < cap) {
    ssize_t r = SysRead(fd, buf + len, cap - 1 - len);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    len += static_cast<size_t>(r);
  }
  SysClose(fd);
  buf[len] = '\0';
  return static_cast<ssize_t>(len);
}

// Field 22 of /proc/self/stat (starttime, clock ticks since boot). The comm field (2) may hold
// spaces and parentheses, so counting starts after the last ')'.
uint64_t SelfStartTime() {
  char stat[1024];
  if (ReadProcFile("/proc/self/stat", stat, sizeof stat) <= 0) return 0;
  const char* p = strrchr(stat, ')');
  if (p == nullptr) return 0;
  ++p;
  for (int field = 3; field <= 22; ++field) {
    while (*p == ' ') ++p;
    if (field == 22) {
      uint64_t v = 0;
      while (*p >= '0' && *p <= '9') v = v * 10 + static_cast<uint64_t>(*p++ - '0');
      return v;
    }
    while (*p != ' ' && *p != '\0') ++p;
  }
  return 0;
}

void FillProcessInfo(SegmentProcess* p) {
  p->pid = static_cast<int32_t>(syscall(SYS_getpid));
  p->uid = static_cast<uint32_t>(syscall(SYS_geteuid));  // the file's owner
  p->start_time_ticks = SelfStartTime();
  p->created_unix_ns = RealtimeNs();
  memset(p->comm, 0, sizeof p->comm);
  syscall(SYS_prctl, PR_GET_NAME, p->comm);
  p->comm[sizeof p->comm - 1] = '\0';
  memset(p->exe, 0, sizeof p->exe);
  syscall(SYS_readlinkat, AT_FDCWD, "/proc/self/exe", p->exe, sizeof p->exe - 1);
  ssize_t n = ReadProcFile("/proc/self/cmdline", p->cmdline, sizeof p->cmdline);
  for (ssize_t i = 0; i < n; ++i)
    if (p->cmdline[i] == '\0') p->cmdline[i] = ' ';
  while (n > 0 && p->cmdline[n - 1] == ' ') p->cmdline[--n] = '\0';
  memset(p->session, 0, sizeof p->session);
  if (const char* s = secure_getenv("DMASHIM_SESSION")) {  // nothing for setuid programs
    for (size_t i = 0; i + 1 < sizeof p->session && s[i] != '\0'; ++i) p->session[i] = s[i];
  }
}

// Opens the run directory, creating its last component 0700 if missing. Refuses a symlink (the
// O_NOFOLLOW open fails with ELOOP or ENOTDIR), a directory owned by someone else, and one that
// others may write to (they could plant files under our names). Returns an fd or -errno.
int OpenRunDir(const char* dir) {
  if (syscall(SYS_mkdirat, AT_FDCWD, dir, 0700) != 0 && errno != EEXIST) return -errno;
  int fd = SysOpenAt(AT_FDCWD, dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return -errno;
  struct stat st;
  if (SysFstat(fd, &st) != 0) {
    int e = errno;
    SysClose(fd);
    return -e;
  }
  if (st.st_uid != static_cast<uid_t>(syscall(SYS_geteuid)) || (st.st_mode & 022) != 0) {
    SysClose(fd);
    return -EPERM;
  }
  return fd;
}

// A segment with our pid and start time already exists: this very process wrote it before an
// exec. Mark it exited (so the exporter exports it once more and reaps it) and move it aside.
int SetAsideOld(int dirfd, const char* name, const SegmentProcess& self) {
  int fd = SysOpenAt(dirfd, name, O_RDWR | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) return errno;
  struct stat st;
  bool ours = SysFstat(fd, &st) == 0 && S_ISREG(st.st_mode) &&
              st.st_uid == static_cast<uid_t>(syscall(SYS_geteuid)) &&
              static_cast<size_t>(st.st_size) == sizeof(SegmentFile);
  if (ours) {
    uint64_t now = RealtimeNs();
    uint32_t one = 1;
    SysPwrite(fd, &now, sizeof now, offsetof(SegmentFile, process.exit_unix_ns));
    SysPwrite(fd, &one, sizeof one, offsetof(SegmentFile, process.exited));
  }
  SysClose(fd);
  if (!ours) return EEXIST;
  char aside[128] = {};
  AppendU64(aside, sizeof aside, static_cast<uint64_t>(self.pid));
  Append(aside, sizeof aside, ".");
  AppendU64(aside, sizeof aside, self.start_time_ticks);
  Append(aside, sizeof aside, ".exec");
  AppendU64(aside, sizeof aside, RealtimeNs());
  Append(aside, sizeof aside, ".seg");
  return SysRenameNoReplace(dirfd, name, aside) == 0 ? 0 : errno;
}

void ZeroCounter(Counter& c) { c.store(0, std::memory_order_relaxed); }

// After fork: the events counted so far were the parent's.
void ResetForChild(SegmentFile* f) {
  uint32_t n = f->pool_count.load(std::memory_order_relaxed);
  for (uint32_t i = 0; i < n && i < kSegmentPoolCapacity; ++i) {
    PoolStats& s = f->pools[i];
    for (Counter* c : {&s.alloc_source, &s.alloc_reserve, &s.alloc_waited, &s.fail_fast,
                       &s.fail_timeout, &s.fail_interrupted, &s.fail_source, &s.frees,
                       &s.wait_count, &s.wait_sum_ns, &s.source_calls, &s.source_ns,
                       &s.source_failures, &s.source_releases})
      ZeroCounter(*c);
    for (Counter& c : s.wait_buckets) ZeroCounter(c);
    for (Counter& c : s.waiter_start_ns) ZeroCounter(c);
    s.blocked_now.store(0, std::memory_order_relaxed);  // only the forking thread survives
  }
  for (Counter& c : f->counters.passthrough) ZeroCounter(c);
  ZeroCounter(f->counters.sites_dropped);
  // config_errors is kept: it describes the configuration the child runs with, not an event.
  memset(static_cast<void*>(f->sites), 0, sizeof f->sites);
  memset(static_cast<void*>(&f->control), 0, sizeof f->control);
  f->process.exited.store(0, std::memory_order_relaxed);
  f->process.exit_unix_ns.store(0, std::memory_order_relaxed);
}

}  // namespace

uint64_t CallSiteHash(int pool_index, const uintptr_t* pcs, int n) {
  // FNV-1a over the pool index and the program counters: cheap, and good enough for a
  // 256-slot table probed linearly.
  uint64_t h = 1469598103934665603ull;
  auto mix = [&h](uint64_t v) {
    for (int i = 0; i < 8; ++i) {
      h ^= (v >> (8 * i)) & 0xff;
      h *= 1099511628211ull;
    }
  };
  mix(static_cast<uint64_t>(pool_index));
  for (int i = 0; i < n; ++i) mix(pcs[i]);
  return h == 0 ? 1 : h;
}

int StatsSegment::Create(const char* run_dir, StatsSegment* out) {
  if (out->file_ != nullptr) return EBUSY;
  char dir[sizeof out->dir_] = {};
  if (run_dir != nullptr && run_dir[0] != '\0') {
    if (!Append(dir, sizeof dir, run_dir)) return ENAMETOOLONG;
  } else if (syscall(SYS_geteuid) == 0) {
    Append(dir, sizeof dir, "/run/dmashim");
  } else {
    const char* xdg = secure_getenv("XDG_RUNTIME_DIR");
    if (xdg == nullptr || xdg[0] != '/') return ENOENT;
    if (!Append(dir, sizeof dir, xdg) || !Append(dir, sizeof dir, "/dmashim")) return ENAMETOOLONG;
  }
  memcpy(out->dir_, dir, sizeof dir);
  return out->MapNew(dir, /*at_fixed_address=*/false);
}

int StatsSegment::CreateForChild() {
  if (file_ == nullptr) return EINVAL;
  return MapNew(dir_, /*at_fixed_address=*/true);
}

// Creates the file under a hidden name, fills it, and renames it into place (the publication).
// With `at_fixed_address` the current contents are copied into the new file, which then replaces
// the old mapping at the same address (fork: keeps every PoolStats* valid).
int StatsSegment::MapNew(const char* dir, bool at_fixed_address) {
  int dirfd = OpenRunDir(dir);
  if (dirfd < 0) return -dirfd;

  SegmentProcess self{};
  FillProcessInfo(&self);
  char name[96] = {};
  AppendU64(name, sizeof name, static_cast<uint64_t>(self.pid));
  Append(name, sizeof name, ".");
  AppendU64(name, sizeof name, self.start_time_ticks);
  char tmp[96] = ".";
  Append(tmp, sizeof tmp, name);
  Append(tmp, sizeof tmp, ".tmp");
  Append(name, sizeof name, ".seg");

  int err = 0;
  void* mem = MAP_FAILED;
  int fd = SysOpenAt(dirfd, tmp, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0) {
    err = errno;
    SysClose(dirfd);
    return err;
  }
  if (syscall(SYS_ftruncate, fd, static_cast<off_t>(sizeof(SegmentFile))) != 0) {
    err = errno;
  } else if (at_fixed_address &&
             SysPwrite(fd, file_, sizeof(SegmentFile), 0) != static_cast<ssize_t>(sizeof(SegmentFile))) {
    err = errno != 0 ? errno : EIO;
  } else {
    mem = SysMmap(at_fixed_address ? file_ : nullptr, sizeof(SegmentFile), PROT_READ | PROT_WRITE,
                  MAP_SHARED | (at_fixed_address ? MAP_FIXED : 0), fd);
    if (mem == MAP_FAILED) err = errno;
  }
  SysClose(fd);
  if (err != 0) {
    syscall(SYS_unlinkat, dirfd, tmp, 0);
    SysClose(dirfd);
    return err;
  }

  auto* f = static_cast<SegmentFile*>(mem);
  if (at_fixed_address) {
    ResetForChild(f);
  } else {
    f->header.version = kSegmentVersion;
    f->header.header_size = sizeof(SegmentHeader);
    f->header.pool_stats_size = sizeof(PoolStats);
    f->header.pool_stats_version = kPoolStatsVersion;
    f->header.pool_capacity = kSegmentPoolCapacity;
    f->header.site_capacity = kSegmentSiteCapacity;
    f->header.site_size = sizeof(CallSite);
    f->header.file_size = sizeof(SegmentFile);
  }
  f->process.pid = self.pid;
  f->process.uid = self.uid;
  f->process.start_time_ticks = self.start_time_ticks;
  f->process.created_unix_ns = self.created_unix_ns;
  memcpy(f->process.comm, self.comm, sizeof self.comm);
  memcpy(f->process.exe, self.exe, sizeof self.exe);
  memcpy(f->process.cmdline, self.cmdline, sizeof self.cmdline);
  memcpy(f->process.session, self.session, sizeof self.session);
  std::atomic_ref<uint64_t>(f->header.magic).store(kSegmentMagic, std::memory_order_release);

  int r = SysRenameNoReplace(dirfd, tmp, name);
  if (r != 0 && errno == EEXIST && SetAsideOld(dirfd, name, self) == 0)
    r = SysRenameNoReplace(dirfd, tmp, name);
  if (r != 0) {
    err = errno;
    syscall(SYS_unlinkat, dirfd, tmp, 0);
    SysClose(dirfd);
    // The fork case has already replaced the parent's mapping; keep it (private to us now).
    if (!at_fixed_address) syscall(SYS_munmap, mem, sizeof(SegmentFile));
    return err;
  }
  SysClose(dirfd);
  file_ = f;
  path_[0] = '\0';
  Append(path_, sizeof path_, dir);
  Append(path_, sizeof path_, "/");
  Append(path_, sizeof path_, name);
  return 0;
}

PoolStats* StatsSegment::AddPool(const char* name, PoolKind kind, uint32_t mode,
                                 uint64_t element_size) {
  if (file_ == nullptr) return nullptr;
  uint32_t idx = claimed_pools_.fetch_add(1, std::memory_order_relaxed);
  if (idx >= kSegmentPoolCapacity) return nullptr;
  PoolStats* s = &file_->pools[idx];
  InitPoolStats(s, name, kind, mode, element_size);
  // Publish in index order, so pools[0, pool_count) are always complete for a reader.
  uint32_t expected = idx;
  while (!file_->pool_count.compare_exchange_weak(expected, idx + 1, std::memory_order_release,
                                                  std::memory_order_relaxed))
    expected = idx;
  return s;
}

int StatsSegment::PoolIndex(const PoolStats* stats) const {
  if (file_ == nullptr || stats < file_->pools || stats >= file_->pools + kSegmentPoolCapacity)
    return -1;
  return static_cast<int>(stats - file_->pools);
}

void StatsSegment::RecordSite(int pool_index, const uintptr_t* pcs, int n, uint64_t wait_ns,
                              bool failed) {
  if (file_ == nullptr || pool_index < 0 || pool_index >= static_cast<int>(kSegmentPoolCapacity))
    return;
  if (n < 0) n = 0;
  if (n > static_cast<int>(kSiteMaxPcs)) n = kSiteMaxPcs;
  uint64_t h = CallSiteHash(pool_index, pcs, n);
  for (uint32_t probe = 0; probe < kSegmentSiteCapacity; ++probe) {
    CallSite& site = file_->sites[(h + probe) % kSegmentSiteCapacity];
    uint64_t cur = site.hash.load(std::memory_order_acquire);
    if (cur == 0 && site.hash.compare_exchange_strong(cur, h, std::memory_order_acq_rel)) {
      site.pool_index = static_cast<uint32_t>(pool_index);
      site.npcs = static_cast<uint32_t>(n);
      for (int i = 0; i < n; ++i) site.pcs[i] = pcs[i];
      site.ready.store(1, std::memory_order_release);
      cur = h;
    }
    if (cur != h) continue;  // another site's slot (the failed CAS loaded its hash into cur)
    site.count.fetch_add(1, std::memory_order_relaxed);
    site.wait_ns.fetch_add(wait_ns, std::memory_order_relaxed);
    if (failed) site.failures.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  file_->counters.sites_dropped.fetch_add(1, std::memory_order_relaxed);
}

bool StatsSegment::PollControl(
    absl::FunctionRef<ControlResult(ControlCommand command, const char* pool, int64_t value)> apply) {
  if (file_ == nullptr) return false;
  SegmentControl& c = file_->control;
  uint64_t req = c.request_seq.load(std::memory_order_acquire);
  if (req == c.response_seq.load(std::memory_order_relaxed)) return false;
  // The requester is another process: copy and terminate before use.
  char pool[kPoolNameMax];
  memcpy(pool, c.pool, sizeof pool);
  pool[sizeof pool - 1] = '\0';
  auto command = static_cast<ControlCommand>(c.command);
  ControlResult result{EINVAL, 0};
  if (command == ControlCommand::kResize) {
    result = apply(command, pool, c.value.load(std::memory_order_relaxed));
  }
  c.status.store(result.status, std::memory_order_relaxed);
  c.result_reserve.store(result.result_reserve, std::memory_order_relaxed);
  c.response_seq.store(req, std::memory_order_release);
  return true;
}

void StatsSegment::MarkExited() {
  if (file_ == nullptr) return;
  file_->process.exit_unix_ns.store(RealtimeNs(), std::memory_order_relaxed);
  file_->process.exited.store(1, std::memory_order_release);
}

void StatsSegment::Close() {
  if (file_ == nullptr) return;
  syscall(SYS_munmap, file_, sizeof(SegmentFile));
  file_ = nullptr;
}

}  // namespace dmashim
