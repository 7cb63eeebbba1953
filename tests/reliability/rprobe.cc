// rprobe: the real program behind the reliability tests (issue 7). Like tests/shim/probe it knows
// nothing of dmashim: it makes plain system calls (mmap MAP_HUGETLB, mlock, fork, exec, signals)
// and prints what it saw as key=value lines; the tests run it with libdmashim.so preloaded and
// compare its view with the stats segment's. Every subcommand bounds its own run time.
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

extern char** environ;

namespace {

constexpr size_t kHuge = size_t{2} << 20;
constexpr int kPrivate = MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB;
constexpr int kShared = MAP_SHARED | MAP_ANONYMOUS | MAP_HUGETLB;

int64_t NowUs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1'000'000 + ts.tv_nsec / 1000;
}

const char* Self() {
  static char path[4096];
  ssize_t n = readlink("/proc/self/exe", path, sizeof path - 1);
  path[n > 0 ? n : 0] = '\0';
  return path;
}

// Maps one 2 MiB huge page, writes a tag to every 4 KiB page and checks it; returns the errno of a
// failed map (0 on success). `corrupt` counts elements that were not zero or lost the tag.
int Cycle(int flags, uint64_t tag, int hold_us, std::atomic<long>* corrupt) {
  auto* p = static_cast<uint64_t*>(mmap(nullptr, kHuge, PROT_READ | PROT_WRITE, flags, -1, 0));
  if (p == MAP_FAILED) return errno;
  const size_t words = kHuge / 8;
  for (size_t w = 0; w < words; w += 512) {
    if (p[w] != 0) corrupt->fetch_add(1);
    p[w] = tag;
  }
  if (hold_us > 0) usleep(static_cast<useconds_t>(hold_us));
  for (size_t w = 0; w < words; w += 512) {
    if (p[w] != tag) corrupt->fetch_add(1);
  }
  munmap(p, kHuge);
  return 0;
}

// ---- churn: threads cycling huge pages until told to stop ----------------------------------------
// churn BLOCK_THREADS FF_THREADS HOLD_US: BLOCK_THREADS map MAP_PRIVATE pages, FF_THREADS map
// MAP_SHARED pages (the tests give each shape its own pool and mode). Prints "ready" once every
// thread made one cycle, runs until a line arrives on stdin (or 30 s), then prints per-group
// counts: ok, failed with ENOMEM, failed otherwise, and the slowest call.
struct Group {
  std::atomic<long> ok{0}, enomem{0}, other{0}, corrupt{0}, max_us{0}, started{0};
};
std::atomic<bool> g_stop{false};
Group g_block, g_ff;
int g_hold_us = 500;

struct ChurnArg {
  Group* g;
  int flags;
  uint64_t tag;
};

void* ChurnThread(void* a) {
  auto* arg = static_cast<ChurnArg*>(a);
  bool first = true;
  while (!g_stop.load()) {
    const int64_t t0 = NowUs();
    const int e = Cycle(arg->flags, arg->tag, g_hold_us, &arg->g->corrupt);
    const long took = static_cast<long>(NowUs() - t0);
    long cur = arg->g->max_us.load();
    while (took > cur && !arg->g->max_us.compare_exchange_weak(cur, took)) {
    }
    if (e == 0) arg->g->ok.fetch_add(1);
    else if (e == ENOMEM) arg->g->enomem.fetch_add(1);
    else arg->g->other.fetch_add(1);
    if (first) {
      arg->g->started.fetch_add(1);
      first = false;
    }
    if (e != 0) usleep(200);  // a failing fail-fast thread must not spin the CPU away
  }
  return nullptr;
}

int Churn(int nblock, int nff, int hold_us) {
  g_hold_us = hold_us;
  std::vector<pthread_t> t;
  std::vector<ChurnArg> args(static_cast<size_t>(nblock + nff));
  for (int i = 0; i < nblock + nff; ++i) {
    args[i] = {i < nblock ? &g_block : &g_ff, i < nblock ? kPrivate : kShared,
               0x5100000000ull + static_cast<uint64_t>(i)};
    pthread_t th;
    pthread_create(&th, nullptr, ChurnThread, &args[i]);
    t.push_back(th);
  }
  const int64_t limit = NowUs() + 30'000'000;
  while ((g_block.started.load() < nblock || g_ff.started.load() < nff) && NowUs() < limit) {
    usleep(1000);
  }
  printf("ready\n");
  fflush(stdout);
  // Until the test says stop (a line or EOF on stdin), or 30 s.
  fd_set rd;
  FD_ZERO(&rd);
  FD_SET(0, &rd);
  timeval tv{30, 0};
  select(1, &rd, nullptr, nullptr, &tv);
  g_stop = true;
  for (pthread_t th : t) pthread_join(th, nullptr);
  printf("block_ok=%ld block_enomem=%ld block_other=%ld block_max_us=%ld ff_ok=%ld ff_enomem=%ld "
         "ff_other=%ld corrupt=%ld\n",
         g_block.ok.load(), g_block.enomem.load(), g_block.other.load(), g_block.max_us.load(),
         g_ff.ok.load(), g_ff.enomem.load(), g_ff.other.load(),
         g_block.corrupt.load() + g_ff.corrupt.load());
  return 0;
}

// ---- alloc N: N cycles, for children of fork / exec / spawn ---------------------------------------
int Alloc(int n) {
  std::atomic<long> corrupt{0};
  int failed = 0;
  for (int i = 0; i < n; ++i) failed += Cycle(kPrivate, 0xa110c + i, 0, &corrupt) != 0;
  printf("pid=%d ok=%d failed=%d corrupt=%ld\n", getpid(), n - failed, failed, corrupt.load());
  return failed != 0 || corrupt.load() != 0 ? 1 : 0;
}

int WaitChild(pid_t pid) {
  int st = 0;
  if (waitpid(pid, &st, 0) != pid) return -1;
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

// ---- forkstorm CHILDREN PER_CHILD: fork CHILDREN children (8 at a time) while a parent thread
// keeps allocating; each child makes PER_CHILD cycles and exits. Prints the children's pids.
std::atomic<bool> g_parent_stop{false};
std::atomic<long> g_parent_ok{0}, g_parent_failed{0}, g_parent_corrupt{0};

void* ParentAllocs(void*) {
  while (!g_parent_stop.load()) {
    if (Cycle(kPrivate, 0xfa7e, 100, &g_parent_corrupt) == 0) g_parent_ok.fetch_add(1);
    else g_parent_failed.fetch_add(1);
  }
  return nullptr;
}

int ForkStorm(int children, int per_child) {
  pthread_t t;
  pthread_create(&t, nullptr, ParentAllocs, nullptr);
  std::string pids;
  int bad_children = 0;
  for (int done = 0; done < children;) {
    std::vector<pid_t> batch;
    for (int i = 0; i < 8 && done < children; ++i, ++done) {
      fflush(stdout);
      pid_t c = fork();
      if (c == 0) {
        std::atomic<long> corrupt{0};
        int failed = 0;
        for (int k = 0; k < per_child; ++k) failed += Cycle(kPrivate, 0xc41d + k, 0, &corrupt) != 0;
        exit(failed != 0 || corrupt.load() != 0 ? 1 : 0);  // a normal exit: its segment says so
      }
      if (c < 0) {
        ++bad_children;
        continue;
      }
      batch.push_back(c);
      pids += (pids.empty() ? "" : ",") + std::to_string(c);
    }
    for (pid_t c : batch) bad_children += WaitChild(c) != 0;
  }
  g_parent_stop = true;
  pthread_join(t, nullptr);
  printf("children=%s bad_children=%d parent_ok=%ld parent_failed=%ld corrupt=%ld\n", pids.c_str(),
         bad_children, g_parent_ok.load(), g_parent_failed.load(), g_parent_corrupt.load());
  return 0;
}

// ---- vfork-exec / spawn: one allocation in the parent, then a child that execs "alloc 2" ---------
int VforkExec() {
  std::atomic<long> corrupt{0};
  const int e1 = Cycle(kPrivate, 1, 0, &corrupt);
  const char* self = Self();
  char* argv[] = {const_cast<char*>(self), const_cast<char*>("alloc"), const_cast<char*>("2"),
                  nullptr};
  fflush(stdout);
  pid_t c = vfork();
  if (c == 0) {
    execve(self, argv, environ);
    _exit(127);
  }
  const int rc = WaitChild(c);
  const int e2 = Cycle(kPrivate, 2, 0, &corrupt);
  printf("child=%d child_rc=%d parent_ok=%d corrupt=%ld\n", c, rc, (e1 == 0) + (e2 == 0),
         corrupt.load());
  return 0;
}

int Spawn() {
  std::atomic<long> corrupt{0};
  const int e1 = Cycle(kPrivate, 1, 0, &corrupt);
  const char* self = Self();
  char* argv[] = {const_cast<char*>(self), const_cast<char*>("alloc"), const_cast<char*>("2"),
                  nullptr};
  fflush(stdout);
  pid_t c = -1;
  const int r = posix_spawn(&c, self, nullptr, nullptr, argv, environ);
  const int rc = r == 0 ? WaitChild(c) : -r;
  const int e2 = Cycle(kPrivate, 2, 0, &corrupt);
  printf("child=%d child_rc=%d parent_ok=%d corrupt=%ld\n", c, rc, (e1 == 0) + (e2 == 0),
         corrupt.load());
  return 0;
}

// ---- exec-chain N: one allocation per image, then exec itself with N-1 (same pid throughout) ------
int ExecChain(int n) {
  std::atomic<long> corrupt{0};
  const int e = Cycle(kPrivate, 0xe8ec + n, 0, &corrupt);
  printf("image=%d pid=%d ok=%d corrupt=%ld\n", n, getpid(), e == 0, corrupt.load());
  fflush(stdout);
  if (e != 0 || corrupt.load() != 0) return 1;
  if (n <= 0) return 0;
  const std::string next = std::to_string(n - 1);
  char* argv[] = {const_cast<char*>(Self()), const_cast<char*>("exec-chain"),
                  const_cast<char*>(next.c_str()), nullptr};
  execve(argv[0], argv, environ);
  printf("exec=%s\n", strerror(errno));
  return 1;
}

// ---- inflight THREADS: threads allocate and free without pause, a progress line every 50 cycles,
// until killed (30 s at most). The test SIGKILLs it mid-allocation.
std::atomic<long> g_cycles{0};
void* Inflight(void*) {
  std::atomic<long> corrupt{0};
  const int64_t limit = NowUs() + 30'000'000;
  while (NowUs() < limit) {
    if (Cycle(kPrivate, 0x1f, 0, &corrupt) == 0) {
      const long n = g_cycles.fetch_add(1) + 1;
      if (n % 50 == 0) {
        printf("cycles=%ld\n", n);
        fflush(stdout);
      }
    }
  }
  return nullptr;
}

int InflightMain(int threads) {
  std::vector<pthread_t> t(static_cast<size_t>(threads));
  for (auto& th : t) pthread_create(&th, nullptr, Inflight, nullptr);
  for (auto& th : t) pthread_join(th, nullptr);
  return 0;
}

// ---- mlockall: the VM size, then mlockall(MCL_CURRENT), munlockall, and mlockall again ------------
long VmKb(const char* field) {
  FILE* f = fopen("/proc/self/status", "r");
  if (f == nullptr) return -1;
  char line[256];
  long v = -1;
  const size_t n = strlen(field);
  while (fgets(line, sizeof line, f)) {
    if (strncmp(line, field, n) == 0 && line[n] == ':') v = strtol(line + n + 1, nullptr, 10);
  }
  fclose(f);
  return v;
}

int MlockAll(size_t extra) {
  // `extra` bytes mapped and locked first with mlock (the app's own pinned buffer).
  int e0 = 0;
  if (extra > 0) {
    void* p = mmap(nullptr, extra, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    e0 = p == MAP_FAILED ? errno : (mlock(p, extra) ? errno : 0);
  }
  const long vm = VmKb("VmSize");
  const long rss = VmKb("RssAnon");
  const int e1 = mlockall(MCL_CURRENT) ? errno : 0;
  const long locked = VmKb("VmLck");
  const int e2 = munlockall() ? errno : 0;
  const int e3 = mlockall(MCL_CURRENT | MCL_FUTURE) ? errno : 0;
  munlockall();
  printf("vm_kb=%ld rss_anon_kb=%ld mlock=%s mlockall=%s locked_kb=%ld munlockall=%s mlockall_future=%s\n",
         vm, rss,
         e0 ? strerrorname_np(e0) : "0", e1 ? strerrorname_np(e1) : "0", locked,
         e2 ? strerrorname_np(e2) : "0", e3 ? strerrorname_np(e3) : "0");
  return 0;
}

// ---- sigstorm HELD THREADS RELEASE_MS: for the signal tests under the shim. Waits for a line on
// stdin (the test takes the node's free huge pages meanwhile), takes HELD huge pages (the pool's
// reserve), then THREADS threads each ask for one more and wait. A storm thread sends SIGUSR1 (a
// handler without SA_RESTART) to every waiter every 200 µs until all are done. After RELEASE_MS
// the HELD pages are unmapped, so still-waiting threads can complete. Then HELD pages are mapped
// again (the pool still works). Prints the outcomes and the number of handled signals.
std::atomic<long> g_signals{0};
void OnUsr1(int) { g_signals.fetch_add(1); }
std::atomic<long> g_w_ok{0}, g_w_eintr{0}, g_w_other{0}, g_w_done{0};
void* Waiter(void*) {
  sigset_t usr1;
  sigemptyset(&usr1);
  sigaddset(&usr1, SIGUSR1);
  pthread_sigmask(SIG_UNBLOCK, &usr1, nullptr);
  void* p = mmap(nullptr, kHuge, PROT_READ | PROT_WRITE, kPrivate, -1, 0);
  if (p == MAP_FAILED) {
    (errno == EINTR ? g_w_eintr : g_w_other).fetch_add(1);
  } else {
    memset(p, 1, kHuge);
    g_w_ok.fetch_add(1);
    munmap(p, kHuge);
  }
  g_w_done.fetch_add(1);
  return nullptr;
}

std::vector<pthread_t> g_waiters;
void* Storm(void*) {
  const int64_t limit = NowUs() + 20'000'000;
  while (g_w_done.load() < static_cast<long>(g_waiters.size()) && NowUs() < limit) {
    for (pthread_t t : g_waiters) pthread_kill(t, SIGUSR1);
    usleep(200);
  }
  return nullptr;
}

int SigStorm(int held, int threads, int release_after_ms) {
  struct sigaction sa {};
  sa.sa_handler = OnUsr1;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0;  // no SA_RESTART
  sigaction(SIGUSR1, &sa, nullptr);
  sigset_t usr1;
  sigemptyset(&usr1);
  sigaddset(&usr1, SIGUSR1);
  pthread_sigmask(SIG_BLOCK, &usr1, nullptr);  // only the waiters take the storm
  printf("ready\n");
  fflush(stdout);
  char line[16];
  if (fgets(line, sizeof line, stdin) == nullptr) return 3;
  std::vector<void*> mine;
  for (int i = 0; i < held; ++i) {
    void* p = mmap(nullptr, kHuge, PROT_READ | PROT_WRITE, kPrivate, -1, 0);
    if (p == MAP_FAILED) {
      printf("held=%d errno=%s\n", i, strerrorname_np(errno));
      return 1;
    }
    mine.push_back(p);
  }
  g_waiters.resize(static_cast<size_t>(threads));
  for (auto& th : g_waiters) pthread_create(&th, nullptr, Waiter, nullptr);
  pthread_t storm;
  pthread_create(&storm, nullptr, Storm, nullptr);
  const int64_t release_at = NowUs() + int64_t{release_after_ms} * 1000;
  while (NowUs() < release_at) usleep(1000);
  const long done_before_release = g_w_done.load();
  for (void* p : mine) munmap(p, kHuge);
  pthread_join(storm, nullptr);  // first: it stops once every waiter is done, and must never
                                 // pthread_kill a thread that was already joined
  for (auto& th : g_waiters) pthread_join(th, nullptr);
  int after = 0;
  for (int i = 0; i < held; ++i) {
    void* p = mmap(nullptr, kHuge, PROT_READ | PROT_WRITE, kPrivate, -1, 0);
    if (p != MAP_FAILED) {
      ++after;
      memset(p, 2, kHuge);
      munmap(p, kHuge);
    }
  }
  printf("ok=%ld eintr=%ld other=%ld done_before_release=%ld signals=%ld after=%d\n",
         g_w_ok.load(), g_w_eintr.load(), g_w_other.load(), done_before_release, g_signals.load(),
         after);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  setvbuf(stdout, nullptr, _IOLBF, 0);
  if (argc < 2) {
    fprintf(stderr, "usage: rprobe COMMAND [ARGS]\n");
    return 2;
  }
  const std::string cmd = argv[1];
  auto arg = [&](int i, long def) { return argc > i ? strtol(argv[i], nullptr, 10) : def; };
  if (cmd == "churn") return Churn(arg(2, 4), arg(3, 0), arg(4, 500));
  if (cmd == "alloc") return Alloc(arg(2, 1));
  if (cmd == "forkstorm") return ForkStorm(arg(2, 16), arg(3, 2));
  if (cmd == "vfork-exec") return VforkExec();
  if (cmd == "spawn") return Spawn();
  if (cmd == "exec-chain") return ExecChain(arg(2, 3));
  if (cmd == "inflight") return InflightMain(arg(2, 4));
  if (cmd == "mlockall") return MlockAll(static_cast<size_t>(arg(2, 0)));
  if (cmd == "sigstorm") return SigStorm(arg(2, 2), arg(3, 4), arg(4, 500));
  fprintf(stderr, "rprobe: unknown command %s\n", cmd.c_str());
  return 2;
}
