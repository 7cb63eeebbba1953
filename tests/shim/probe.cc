// probe: a real program for the shim's integration tests. Each subcommand exercises one behaviour
// of the transparency contract or the guarantee with plain system calls — it knows nothing of
// dmashim — and prints what it observed as key=value lines. The tests run it with and without the
// shim preloaded and compare.
#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/memfd.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <stddef.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/ipc.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/shm.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000
#endif
#ifndef MFD_HUGETLB
#define MFD_HUGETLB 4U
#endif

namespace {

constexpr size_t kHuge = size_t{2} << 20;
constexpr int kHugeFlags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB;

const char* ErrName(int e) {
  switch (e) {
    case 0: return "0";
    case ENOMEM: return "ENOMEM";
    case EINVAL: return "EINVAL";
    case EEXIST: return "EEXIST";
    case EAGAIN: return "EAGAIN";
    case EPERM: return "EPERM";
    case ENOSPC: return "ENOSPC";
    case EINTR: return "EINTR";
    case EFAULT: return "EFAULT";
    default: return strerrorname_np(e) ? strerrorname_np(e) : "E?";
  }
}

void* MapHuge(size_t len = kHuge, int extra = 0) {
  return mmap(nullptr, len, PROT_READ | PROT_WRITE, kHugeFlags | extra, -1, 0);
}

size_t CountNonZeroPages(const unsigned char* p, size_t len) {
  size_t n = 0;
  for (size_t off = 0; off < len; off += 4096) {
    for (size_t i = 0; i < 4096; i += 8) {
      if (*reinterpret_cast<const uint64_t*>(p + off + i) != 0) {
        ++n;
        break;
      }
    }
  }
  return n;
}

int64_t NowMs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

// zero N: N cycles of map / check zero / dirty / unmap.
int Zero(int n) {
  size_t dirty = 0;
  int failed = 0;
  for (int i = 0; i < n; ++i) {
    auto* p = static_cast<unsigned char*>(MapHuge());
    if (p == MAP_FAILED) {
      ++failed;
      continue;
    }
    dirty += CountNonZeroPages(p, kHuge);
    memset(p, 0xff, kHuge);
    munmap(p, kHuge);
  }
  printf("dirty_pages=%zu failed=%d\n", dirty, failed);
  return 0;
}

int SharedFork() {
  auto* p = static_cast<volatile char*>(
      mmap(nullptr, kHuge, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS | MAP_HUGETLB, -1, 0));
  if (p == MAP_FAILED) {
    printf("map=%s\n", ErrName(errno));
    return 1;
  }
  pid_t c = fork();
  if (c == 0) {
    p[0] = 0x42;
    p[kHuge - 1] = 0x43;
    _exit(0);
  }
  waitpid(c, nullptr, 0);
  printf("seen_first=%d seen_last=%d\n", p[0], p[kHuge - 1]);
  munmap(const_cast<char*>(p), kHuge);
  return 0;
}

int PrivateFork() {
  auto* p = static_cast<volatile char*>(MapHuge());
  if (p == MAP_FAILED) {
    printf("map=%s\n", ErrName(errno));
    return 1;
  }
  p[100] = 'P';
  pid_t c = fork();
  if (c == 0) {
    const bool saw = p[100] == 'P';
    p[100] = 'C';
    _exit(saw && p[100] == 'C' ? 0 : 1);
  }
  int st = 0;
  waitpid(c, &st, 0);
  printf("parent=%c child_ok=%d\n", p[100], WIFEXITED(st) && WEXITSTATUS(st) == 0);
  munmap(const_cast<char*>(p), kHuge);
  return 0;
}

int PartialMunmap() {
  auto* p = static_cast<char*>(MapHuge(2 * kHuge));
  if (p == MAP_FAILED) {
    printf("map=%s\n", ErrName(errno));
    return 1;
  }
  memset(p, 1, 2 * kHuge);
  int r1 = munmap(p + kHuge, kHuge);
  int e1 = r1 ? errno : 0;
  p[0] = 2;  // the first half is still mapped
  int r2 = munmap(p, 4096);  // not a huge-page multiple
  int e2 = r2 ? errno : 0;
  int r3 = munmap(p, kHuge);
  int e3 = r3 ? errno : 0;
  printf("second_half=%s unaligned_len=%s first_half=%s\n", ErrName(e1), ErrName(e2), ErrName(e3));
  return 0;
}

int BadMunmap() {
  auto* p = static_cast<char*>(MapHuge());
  if (p == MAP_FAILED) {
    printf("map=%s\n", ErrName(errno));
    return 1;
  }
  int e1 = munmap(p + 1, 4096) ? errno : 0;
  int e2 = munmap(p, 4096) ? errno : 0;
  int e3 = munmap(p, 0) ? errno : 0;
  int e4 = munmap(p, kHuge) ? errno : 0;
  printf("unaligned_addr=%s short_len=%s zero_len=%s whole=%s\n", ErrName(e1), ErrName(e2),
         ErrName(e3), ErrName(e4));
  return 0;
}

int MprotectReuse() {
  auto* p = static_cast<char*>(MapHuge());
  if (p == MAP_FAILED) return 1;
  memset(p, 7, kHuge);
  mprotect(p, kHuge, PROT_READ);
  munmap(p, kHuge);
  auto* q = static_cast<unsigned char*>(MapHuge());
  if (q == MAP_FAILED) return 1;
  const size_t dirty = CountNonZeroPages(q, kHuge);
  memset(q, 9, kHuge);  // SIGSEGV here if the element came back read-only
  printf("reused=%d dirty_pages=%zu writable=1\n", q == reinterpret_cast<unsigned char*>(p),
         dirty);
  munmap(q, kHuge);
  return 0;
}

int FixedOverFreed(bool noreplace) {
  auto* p = static_cast<char*>(MapHuge());
  if (p == MAP_FAILED) return 1;
  munmap(p, kHuge);
  const int flag = noreplace ? MAP_FIXED_NOREPLACE : MAP_FIXED;
  void* q = mmap(p, kHuge, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | flag, -1, 0);
  if (q == MAP_FAILED) {
    printf("fixed=%s\n", ErrName(errno));
    return 0;
  }
  const size_t dirty = CountNonZeroPages(static_cast<unsigned char*>(q), kHuge);
  memset(q, 3, kHuge);
  munmap(q, kHuge);
  // The next huge-page mapping must not come back at an address the app now owns.
  printf("fixed=0 same_addr=%d dirty_pages=%zu\n", q == p, dirty);
  return 0;
}

int Mremap() {
  auto* p = static_cast<char*>(MapHuge());
  if (p == MAP_FAILED) return 1;
  memset(p, 0x5a, kHuge);
  void* q = mremap(p, kHuge, 2 * kHuge, MREMAP_MAYMOVE);
  if (q == MAP_FAILED) {
    printf("mremap=%s\n", ErrName(errno));
    munmap(p, kHuge);
    return 0;
  }
  const bool kept = static_cast<char*>(q)[0] == 0x5a && static_cast<char*>(q)[kHuge - 1] == 0x5a;
  static_cast<char*>(q)[2 * kHuge - 1] = 1;
  printf("mremap=0 kept=%d unmap=%s\n", kept, ErrName(munmap(q, 2 * kHuge) ? errno : 0));
  return 0;
}

int Plain() {
  auto* p = static_cast<char*>(
      mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  if (p == MAP_FAILED) return 1;
  const size_t dirty = CountNonZeroPages(reinterpret_cast<unsigned char*>(p), 4096);
  p[0] = 1;
  int e = munmap(p, 4096) ? errno : 0;
  int e2 = munmap(reinterpret_cast<char*>(8191), 4096) ? errno : 0;
  void* bad = mmap(nullptr, 0, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  printf("dirty_pages=%zu unmap=%s bad_unmap=%s zero_len_map=%s\n", dirty, ErrName(e), ErrName(e2),
         bad == MAP_FAILED ? ErrName(errno) : "mapped");
  return 0;
}

// exhaust: map 2 MiB huge pages until the kernel refuses; report the errno.
int Exhaust() {
  std::vector<void*> held;
  int err = 0;
  for (int i = 0; i < 100000; ++i) {
    void* p = MapHuge();
    if (p == MAP_FAILED) {
      err = errno;
      break;
    }
    held.push_back(p);
  }
  printf("mapped=%zu errno=%s\n", held.size(), ErrName(err));
  for (void* p : held) munmap(p, kHuge);
  return 0;
}

std::atomic<long> g_bad{0}, g_fail{0}, g_ok{0};

void* ThreadLoop(void* arg) {
  const auto id = static_cast<uint64_t>(reinterpret_cast<uintptr_t>(arg));
  const int cycles = 200;
  for (int i = 0; i < cycles; ++i) {
    auto* p = static_cast<uint64_t*>(MapHuge());
    if (p == MAP_FAILED) {
      g_fail.fetch_add(1);
      continue;
    }
    const size_t words = kHuge / 8;
    for (size_t w = 0; w < words; w += 512) {
      if (p[w] != 0) g_bad.fetch_add(1);
      p[w] = id;
    }
    usleep(50);
    for (size_t w = 0; w < words; w += 512) {
      if (p[w] != id) g_bad.fetch_add(1);  // another thread got the same element
    }
    munmap(p, kHuge);
    g_ok.fetch_add(1);
  }
  return nullptr;
}

int Threads(int n) {
  std::vector<pthread_t> t(n);
  for (int i = 0; i < n; ++i) {
    pthread_create(&t[i], nullptr, ThreadLoop, reinterpret_cast<void*>(uintptr_t(i + 1)));
  }
  for (auto& th : t) pthread_join(th, nullptr);
  printf("ok=%ld failed=%ld corrupt=%ld\n", g_ok.load(), g_fail.load(), g_bad.load());
  return 0;
}

// guarantee KIND [ARG]: starts, says "ready", waits for a line on stdin (the test takes the node's
// huge pages meanwhile), then makes one huge-page allocation of the given kind and touches it.
int Guarantee(const std::string& kind, const char* arg) {
  printf("ready\n");
  fflush(stdout);
  char line[16];
  if (fgets(line, sizeof line, stdin) == nullptr) return 3;
  char* p = nullptr;
  int err = 0;
  if (kind == "anon-private") {
    void* m = MapHuge();
    if (m == MAP_FAILED) err = errno; else p = static_cast<char*>(m);
  } else if (kind == "anon-shared") {
    void* m = mmap(nullptr, kHuge, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS | MAP_HUGETLB,
                   -1, 0);
    if (m == MAP_FAILED) err = errno; else p = static_cast<char*>(m);
  } else if (kind == "fixed") {
    // The JVM's way: reserve address space, then map huge pages MAP_FIXED into it.
    void* r = mmap(nullptr, 2 * kHuge, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    char* a = reinterpret_cast<char*>((reinterpret_cast<uintptr_t>(r) + kHuge - 1) & ~(kHuge - 1));
    void* m = mmap(a, kHuge, PROT_READ | PROT_WRITE, kHugeFlags | MAP_FIXED, -1, 0);
    if (m == MAP_FAILED) err = errno; else p = static_cast<char*>(m);
  } else if (kind == "fallocate") {
    // DPDK sizes its hugetlbfs page files with fallocate: ENOSPC when the node has no page.
    const std::string path = std::string(arg) + "/probe-" + std::to_string(getpid());
    int fd = open(path.c_str(), O_CREAT | O_RDWR, 0600);
    unlink(path.c_str());
    if (fd < 0) {
      printf("result=open:%s\n", ErrName(errno));
      return 1;
    }
    if (fallocate(fd, 0, 0, kHuge) != 0) err = errno;
    if (err == 0) {
      void* m = mmap(nullptr, kHuge, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
      if (m == MAP_FAILED) err = errno; else p = static_cast<char*>(m);
    }
  } else if (kind == "hugetlbfs" || kind == "memfd") {
    int fd = -1;
    if (kind == "memfd") {
      fd = memfd_create("probe", MFD_HUGETLB);
    } else {
      const std::string path = std::string(arg) + "/probe-" + std::to_string(getpid());
      fd = open(path.c_str(), O_CREAT | O_RDWR, 0600);
      unlink(path.c_str());
    }
    if (fd < 0) {
      printf("result=open:%s\n", ErrName(errno));
      return 1;
    }
    if (ftruncate(fd, kHuge) != 0) err = errno;
    if (err == 0) {
      void* m = mmap(nullptr, kHuge, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, 0);
      if (m == MAP_FAILED) err = errno; else p = static_cast<char*>(m);
    }
  } else if (kind == "shm") {
    int id = shmget(IPC_PRIVATE, kHuge, IPC_CREAT | SHM_HUGETLB | 0600);
    if (id < 0) {
      err = errno;
    } else {
      void* m = shmat(id, nullptr, 0);
      shmctl(id, IPC_RMID, nullptr);
      if (m == reinterpret_cast<void*>(-1)) err = errno; else p = static_cast<char*>(m);
    }
  } else {
    printf("result=unknown-kind\n");
    return 2;
  }
  if (p == nullptr) {
    printf("result=%s\n", ErrName(err));
    return 1;
  }
  memset(p, 0x11, kHuge);  // every page really there: no SIGBUS
  printf("result=ok\n");
  return 0;
}

// modes: takes two elements (the pool's reserve while the node has no free page), then tries a
// third. A helper thread frees one of the two after 600 ms. Reports how the third call ended and
// how long it took.
void* FreeLater(void* p) {
  usleep(600 * 1000);
  munmap(p, kHuge);
  return nullptr;
}

int Modes() {
  printf("ready\n");
  fflush(stdout);
  char line[16];
  if (fgets(line, sizeof line, stdin) == nullptr) return 3;
  void* a = MapHuge();
  void* b = MapHuge();
  if (a == MAP_FAILED || b == MAP_FAILED) {
    printf("first_two=%s\n", ErrName(errno));
    return 1;
  }
  pthread_t t;
  pthread_create(&t, nullptr, FreeLater, a);
  const int64_t t0 = NowMs();
  void* c = MapHuge();
  const int err = c == MAP_FAILED ? errno : 0;
  const int64_t ms = NowMs() - t0;
  pthread_join(t, nullptr);
  printf("third=%s elapsed_ms=%lld\n", c == MAP_FAILED ? ErrName(err) : "ok",
         static_cast<long long>(ms));
  return c == MAP_FAILED ? 1 : 0;
}

// mlock BYTES...: for each size, locks a fresh anonymous buffer, reports the outcome, and keeps it
// locked (the budget adds up).
int Mlock(int argc, char** argv) {
  std::string out;
  for (int i = 0; i < argc; ++i) {
    const size_t len = strtoull(argv[i], nullptr, 10);
    void* p = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    int e = p == MAP_FAILED ? errno : (mlock(p, len) ? errno : 0);
    out += std::string(i ? " " : "") + "mlock" + std::to_string(i) + "=" + ErrName(e);
  }
  printf("%s\n", out.c_str());
  return 0;
}

}  // namespace

// One pool hit: maps a 2 MiB huge page, touches it, unmaps it. Whether all of it worked.
bool HugeHit() {
  void* p = MapHuge();
  if (p == MAP_FAILED) return false;
  static_cast<volatile char*>(p)[0] = 1;
  return munmap(p, kHuge) == 0;
}

// Under a seccomp filter that answers membarrier(2) with `action` ("kill": the process dies of
// SIGSYS, as under a sandbox whose default is to kill; "errno": the call fails with EPERM; "none":
// no filter), maps,
// touches and unmaps 2 MiB 40 times on this thread, then 20 rounds of: a 2 ms pause, 40 more, and
// one on a second thread — runs of hits that bias a pool lock (again), then another thread's lock
// to revoke it. `when` "late": the filter comes after the first 40 hits instead of before them.
int SeccompMembarrier(const std::string& action, const std::string& when) {
  const bool kill = action == "kill";
  sock_filter f[] = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_membarrier, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, kill ? SECCOMP_RET_KILL_PROCESS : SECCOMP_RET_ERRNO | EPERM),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
  };
  sock_fprog prog = {sizeof(f) / sizeof(f[0]), f};
  auto filter = [&] {
    if (action == "none") return true;
    return prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0 &&
           prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) == 0;
  };
  const bool late = when == "late";
  if (!late && !filter()) {
    printf("error=seccomp_%s\n", ErrName(errno));
    return 1;
  }
  std::atomic<int> hits{0};
  auto hit = [&] {
    if (HugeHit()) ++hits;
  };
  for (int i = 0; i < 40; ++i) hit();
  if (late && !filter()) {
    printf("error=seccomp_%s\n", ErrName(errno));
    return 1;
  }
  for (int round = 0; round < 20; ++round) {
    usleep(2000);
    for (int i = 0; i < 40; ++i) hit();
    pthread_t t;
    pthread_create(&t, nullptr, [](void* h) -> void* {
      (*static_cast<decltype(hit)*>(h))();
      return nullptr;
    }, &hit);
    pthread_join(t, nullptr);
  }
  printf("hits=%d\n", hits.load());
  return 0;
}

// Rounds of pool hits (map a 2 MiB huge page, touch it, unmap it), `per_round` each, after a
// warm-up, with a pause of `pause_ms` before each round (the maintenance thread zeroes what the
// last round freed): each round sits between two getppid(2) calls, marks for a tracer. The first
// pause is 250 ms at least: the maintenance thread, which sleeps on a 100 ms tick after helping
// with the prefault, takes its first look at the pool (and the lock's bias) within it.
int QuietHits(int rounds, int per_round, int pause_ms) {
  int hits = 0;
  auto hit = [&] {
    if (HugeHit()) ++hits;
  };
  for (int i = 0; i < 16; ++i) hit();
  usleep(250'000);
  for (int round = 0; round < rounds; ++round) {
    usleep(static_cast<useconds_t>(pause_ms) * 1000);
    syscall(SYS_getppid);
    for (int i = 0; i < per_round; ++i) hit();
    syscall(SYS_getppid);
  }
  printf("tid=%ld hits=%d\n", static_cast<long>(syscall(SYS_gettid)), hits);
  return 0;
}

int main(int argc, char** argv) {
  setvbuf(stdout, nullptr, _IOLBF, 0);
  if (argc < 2) {
    fprintf(stderr, "usage: probe COMMAND [ARGS]\n");
    return 2;
  }
  const std::string cmd = argv[1];
  if (cmd == "zero") return Zero(argc > 2 ? atoi(argv[2]) : 20);
  if (cmd == "shared-fork") return SharedFork();
  if (cmd == "private-fork") return PrivateFork();
  if (cmd == "partial-munmap") return PartialMunmap();
  if (cmd == "bad-munmap") return BadMunmap();
  if (cmd == "mprotect-reuse") return MprotectReuse();
  if (cmd == "fixed-noreplace") return FixedOverFreed(true);
  if (cmd == "fixed") return FixedOverFreed(false);
  if (cmd == "mremap") return Mremap();
  if (cmd == "plain") return Plain();
  if (cmd == "exhaust") return Exhaust();
  if (cmd == "threads") return Threads(argc > 2 ? atoi(argv[2]) : 8);
  if (cmd == "guarantee" && argc > 2) return Guarantee(argv[2], argc > 3 ? argv[3] : "");
  if (cmd == "modes") return Modes();
  if (cmd == "mlock") return Mlock(argc - 2, argv + 2);
  if (cmd == "seccomp-membarrier" && argc > 3) return SeccompMembarrier(argv[2], argv[3]);
  if (cmd == "quiet-hits" && argc > 4) return QuietHits(atoi(argv[2]), atoi(argv[3]), atoi(argv[4]));
  fprintf(stderr, "probe: unknown command %s\n", cmd.c_str());
  return 2;
}
