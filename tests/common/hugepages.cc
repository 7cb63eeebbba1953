#include "tests/common/hugepages.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <mutex>

#ifndef MAP_HUGE_SHIFT
#define MAP_HUGE_SHIFT 26
#endif
#ifndef MAP_HUGE_2MB
#define MAP_HUGE_2MB (21 << MAP_HUGE_SHIFT)
#endif
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

namespace dmashim::testing {
namespace {

constexpr const char* kNrHugePages = "/proc/sys/vm/nr_hugepages";
constexpr const char* kFree2M = "/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages";
constexpr const char* kTotal2M = "/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages";

long ReadLong(const char* path) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  char buf[32] = {};
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0) return -1;
  return strtol(buf, nullptr, 10);
}

// Returns 0 or the errno of the failed open/write.
int WriteLong(const char* path, long value) {
  int fd = open(path, O_WRONLY | O_CLOEXEC);
  if (fd < 0) return errno;
  char buf[32];
  int len = snprintf(buf, sizeof buf, "%ld\n", value);
  ssize_t n = write(fd, buf, static_cast<size_t>(len));
  int err = n == len ? 0 : (n < 0 ? errno : EIO);
  close(fd);
  return err;
}

// What this process added to nr_hugepages (restored at exit). Guarded by Mu().
struct Raise {
  pid_t pid = 0;    // the process that raised (fork children inherit this and must not restore)
  long added = 0;   // pages added in total
  long before = 0;  // nr_hugepages before the first raise: the restore never goes below it
};
std::mutex& Mu() {
  static std::mutex* m = new std::mutex;
  return *m;
}
Raise& TheRaise() {
  static Raise* r = new Raise;
  return *r;
}

std::string Advice(long count) {
  return "echo " + std::to_string(std::max<long>(count, 0) + std::max<long>(TotalHugePages2M(), 0) -
                                  std::max<long>(FreeHugePages2M(), 0)) +
         " > /proc/sys/vm/nr_hugepages as root, or run scripts/test.sh";
}

}  // namespace

long FreeHugePages2M() { return ReadLong(kFree2M); }
long TotalHugePages2M() { return ReadLong(kTotal2M); }

bool InCi() {
  const char* ci = getenv("CI");
  return ci != nullptr && (strcmp(ci, "true") == 0 || strcmp(ci, "1") == 0);
}

HugePageCheck EnsureFreeHugePages(long count) {
  HugePageCheck r;
  std::lock_guard<std::mutex> l(Mu());
  const long free_now = FreeHugePages2M();
  if (free_now < 0) {
    r.message = "this kernel has no 2 MiB huge pages (cannot read " + std::string(kFree2M) + ")";
    return r;
  }
  if (free_now >= count) {
    r.ok = true;
    return r;
  }
  const std::string need = "need " + std::to_string(count) + " free 2 MiB huge pages, " +
                           std::to_string(free_now) + " free";
  if (geteuid() != 0) {
    r.message = need + " and not root, so nr_hugepages cannot be raised; " + Advice(count);
    return r;
  }
  const long nr = ReadLong(kNrHugePages);
  if (nr < 0) {
    r.message = need + "; cannot read " + std::string(kNrHugePages);
    return r;
  }
  const long target = nr + (count - free_now);
  if (int err = WriteLong(kNrHugePages, target); err != 0) {
    r.message = need + "; writing " + std::to_string(target) + " to " + kNrHugePages +
                " failed: " + strerror(err);
    return r;
  }
  const long got = ReadLong(kNrHugePages);
  Raise& raise = TheRaise();
  if (got > nr) {
    if (raise.pid != getpid()) {
      raise = Raise{getpid(), 0, nr};
      atexit(RestoreHugePages);
    }
    raise.added += got - nr;
  }
  const long free_after = FreeHugePages2M();
  if (free_after >= count) {
    r.ok = true;
    return r;
  }
  r.message = need + "; raised nr_hugepages from " + std::to_string(nr) + " towards " +
              std::to_string(target) + " but the kernel gave " + std::to_string(got) + " (" +
              std::to_string(free_after) +
              " free): memory is too fragmented or too small; reserve huge pages at boot "
              "(hugepages= on the kernel command line) or free memory";
  return r;
}

void RestoreHugePages() {
  std::lock_guard<std::mutex> l(Mu());
  Raise& raise = TheRaise();
  if (raise.pid != getpid() || raise.added == 0) return;
  const long nr = ReadLong(kNrHugePages);
  // Take back only what this process added, so concurrent test processes that raised too keep
  // theirs — but never below the count found before the first raise: another process may have set
  // the count meanwhile (a script putting back the value it saw, which undid this raise), and
  // taking the raise off that would leave the node with fewer pages than it had.
  if (nr >= 0) WriteLong(kNrHugePages, std::max(raise.before, nr - raise.added));
  raise.added = 0;
}

namespace {

// The hog child: async-signal-safe system calls only (the parent may have threads).
[[noreturn]] void HogChild(int report_fd, int release_fd, long max_pages, int hold_seconds) {
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  // Keep no other descriptor of the parent's: another hog's release pipe held open here would keep
  // that hog waiting for its safety delay.
  for (int fd = 3; fd < 1024; ++fd) {
    if (fd != report_fd && fd != release_fd) close(fd);
  }
  long held = 0;
  while (max_pages < 0 || held < max_pages) {
    void* p = mmap(nullptr, kHugePage2M, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB | MAP_HUGE_2MB, -1, 0);
    if (p == MAP_FAILED) break;
    if (madvise(p, kHugePage2M, MADV_POPULATE_WRITE) != 0) {
      munmap(p, kHugePage2M);
      break;
    }
    ++held;
  }
  if (write(report_fd, &held, sizeof held) != sizeof held) _exit(2);
  close(report_fd);
  // Wait for EOF from the parent (Release or the parent's exit), or the safety delay.
  pollfd pfd{release_fd, POLLIN, 0};
  while (poll(&pfd, 1, hold_seconds * 1000) < 0 && errno == EINTR) {
  }
  _exit(0);  // the kernel unmaps every page
}

}  // namespace

HugePageHog::HugePageHog(long max_pages, int hold_seconds) {
  int report[2], release[2];
  if (pipe2(report, O_CLOEXEC) != 0) {
    error_ = std::string("pipe: ") + strerror(errno);
    return;
  }
  if (pipe2(release, O_CLOEXEC) != 0) {
    error_ = std::string("pipe: ") + strerror(errno);
    close(report[0]);
    close(report[1]);
    return;
  }
  pid_ = fork();
  if (pid_ < 0) {
    error_ = std::string("fork: ") + strerror(errno);
    for (int fd : {report[0], report[1], release[0], release[1]}) close(fd);
    return;
  }
  if (pid_ == 0) {
    close(report[0]);
    close(release[1]);
    HogChild(report[1], release[0], max_pages, hold_seconds);
  }
  close(report[1]);
  close(release[0]);
  to_child_ = release[1];
  long held = -1;
  pollfd pfd{report[0], POLLIN, 0};
  int pr;
  while ((pr = poll(&pfd, 1, 60'000)) < 0 && errno == EINTR) {
  }
  ssize_t n = pr > 0 ? read(report[0], &held, sizeof held) : -1;
  close(report[0]);
  if (n != sizeof held) {
    error_ = "hog child did not report its pages";
    Release();
    return;
  }
  pages_ = held;
  ok_ = true;
}

bool HugePageHog::Release() {
  if (pid_ <= 0) return false;
  if (released_) return exited_ok_;
  released_ = true;
  if (to_child_ >= 0) {
    close(to_child_);  // EOF tells the child to let go (no write: it may have gone already)
    to_child_ = -1;
  }
  int status = 0;
  while (waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
  }
  exited_ok_ = WIFEXITED(status) && WEXITSTATUS(status) == 0;
  return exited_ok_;
}

HugePageHog::~HugePageHog() { Release(); }

}  // namespace dmashim::testing
