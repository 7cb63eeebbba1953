// Helpers of the reliability tests that run rprobe under the shim (tests/reliability).
#pragma once

#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "tests/common/hugepages.h"
#include "tests/shim/harness.h"

namespace dmashim::testing {

inline std::string RprobePath() { return DMASHIM_TEST_RPROBE_PATH; }

inline uint64_t Allocs(const PoolStats* p) {
  return Get(p->alloc_source) + Get(p->alloc_reserve) + Get(p->alloc_waited);
}
inline uint64_t Failures(const PoolStats* p) {
  return Get(p->fail_fast) + Get(p->fail_timeout) + Get(p->fail_interrupted) + Get(p->fail_source);
}

// Another process that keeps taking every 2 MiB huge page that becomes free (every 500 µs), and
// holds them until Stop(), its parent's death or `max_seconds`. Unlike HugePageHog (one sweep),
// pages a program gives back while it runs are taken too.
class Grabber {
 public:
  explicit Grabber(int max_seconds = 20) {
    int p[2];
    if (pipe(p) != 0) return;
    pid_ = fork();
    if (pid_ == 0) {
      close(p[1]);
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      std::vector<void*> held;
      for (int round = 0; round < max_seconds * 2000; ++round) {
        for (;;) {
          void* m = mmap(nullptr, kHugePage2M, PROT_READ | PROT_WRITE,
                         MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB, -1, 0);
          if (m == MAP_FAILED) break;
          if (madvise(m, kHugePage2M, 23 /* MADV_POPULATE_WRITE */) != 0) {
            munmap(m, kHugePage2M);
            break;
          }
          held.push_back(m);
        }
        struct timeval tv {0, 500};
        fd_set rd;
        FD_ZERO(&rd);
        FD_SET(p[0], &rd);
        if (select(p[0] + 1, &rd, nullptr, nullptr, &tv) > 0) break;  // EOF: stop
      }
      _exit(held.size() > 0 ? 0 : 1);
    }
    close(p[0]);
    to_child_ = p[1];
  }
  ~Grabber() { Stop(); }
  // Releases every page; true when the child held at least one.
  bool Stop() {
    if (pid_ <= 0) return false;
    close(to_child_);
    int st = 0;
    waitpid(pid_, &st, 0);
    pid_ = -1;
    took_ = WIFEXITED(st) && WEXITSTATUS(st) == 0;
    return took_;
  }

 private:
  pid_t pid_ = -1;
  int to_child_ = -1;
  bool took_ = false;
};

// Sets /proc/sys/vm/nr_hugepages and puts the old value back when destroyed.
class NrHugepages {
 public:
  NrHugepages() { old_ = Read(); }
  ~NrHugepages() {
    if (old_ >= 0 && changed_) Write(old_);
  }
  static long Read() {
    std::ifstream in("/proc/sys/vm/nr_hugepages");
    long v = -1;
    in >> v;
    return v;
  }
  bool Set(long v) {
    changed_ = true;
    return Write(v);
  }
  long old() const { return old_; }

 private:
  static bool Write(long v) {
    FILE* f = fopen("/proc/sys/vm/nr_hugepages", "w");
    if (f == nullptr) return false;
    const bool ok = fprintf(f, "%ld\n", v) > 0;
    return fclose(f) == 0 && ok;
  }
  long old_ = -1;
  bool changed_ = false;
};

}  // namespace dmashim::testing
