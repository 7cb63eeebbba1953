// The ibverbs test program: memory registration through rdma-core's API as applications write it
// (the ibv_reg_mr() macro of <infiniband/verbs.h>), linked against the stand-in
// (tests/ibverbs/ibverbs_standin.c). Prints one line of key=value results.
//   reg N SIZE [fork_init] [keep]   N registrations; a fork child reads every buffer; dereg all
//   optional SIZE                   one registration through the macro's ibv_reg_mr_iova2 path
//   wait SIZE                       2 held; a thread deregisters one after 100 ms; a third waits
//   forkstorm FORKS                 two threads register and deregister while the main thread
//                                   forks FORKS times; each child registers and deregisters
#include <infiniband/verbs.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <signal.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <string>
#include <thread>
#include <vector>

#include "tests/common/child.h"

extern "C" unsigned long ibverbs_standin_count(const char* what);

namespace {

uint64_t NowUs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000 + static_cast<uint64_t>(ts.tv_nsec) / 1000;
}

// Whether /proc/self/smaps marks the mapping holding `p` "dc" (MADV_DONTFORK).
int DontFork(const void* p) {
  FILE* f = fopen("/proc/self/smaps", "r");
  if (f == nullptr) return -1;
  char line[512];
  bool in = false;
  int out = 0;
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  while (fgets(line, sizeof line, f)) {
    unsigned long lo, hi;
    if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2 && strchr(line, ':') != nullptr &&
        line[strlen(line) - 1] == '\n' && strncmp(line, "VmFlags", 7) != 0) {
      in = a >= lo && a < hi;
    } else if (in && strncmp(line, "VmFlags:", 8) == 0) {
      out = strstr(line, " dc") != nullptr;
      break;
    }
  }
  fclose(f);
  return out;
}

ibv_pd* FakePd() { return reinterpret_cast<ibv_pd*>(0x1000); }  // the stand-in never reads it

int Reg(int n, size_t size, bool fork_init, bool keep) {
  if (fork_init) ibv_fork_init();
  std::vector<char*> bufs;
  std::vector<ibv_mr*> mrs;
  int ok = 0, err = 0;
  size_t lengths = 0;
  for (int i = 0; i < n; ++i) {
    char* b = static_cast<char*>(aligned_alloc(4096, size));
    memset(b, 'a' + i, size);
    bufs.push_back(b);
    ibv_mr* mr = ibv_reg_mr(FakePd(), b, size, IBV_ACCESS_LOCAL_WRITE);
    if (mr == nullptr) {
      err = errno;
      continue;
    }
    ++ok;
    lengths += mr->length;
    mrs.push_back(mr);
  }
  const int dontfork = DontFork(bufs[0]);
  int child_ok = -1;
  if (!fork_init) {
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
      for (int i = 0; i < n; ++i) {
        if (bufs[i][0] != 'a' + i || bufs[i][size - 1] != 'a' + i) _exit(1);
      }
      _exit(0);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    child_ok = WIFEXITED(st) && WEXITSTATUS(st) == 0;
  }
  int dereg_ok = 1;
  if (!keep) {
    for (ibv_mr* mr : mrs) dereg_ok &= ibv_dereg_mr(mr) == 0;
  }
  printf("registered=%d errno=%s lengths=%zu dontfork=%d child_ok=%d dereg_ok=%d fork_status=%d "
         "reg_calls=%lu pid=%d\n",
         ok, err == 0 ? "0" : strerrorname_np(err), lengths, dontfork, child_ok, dereg_ok,
         static_cast<int>(ibv_is_fork_initialized()), ibverbs_standin_count("reg"),
         static_cast<int>(getpid()));
  return 0;
}

int Optional(size_t size) {
  char* b = static_cast<char*>(aligned_alloc(4096, size));
  volatile unsigned access =
      static_cast<unsigned>(IBV_ACCESS_LOCAL_WRITE) | static_cast<unsigned>(IBV_ACCESS_OPTIONAL_RANGE);
  ibv_mr* mr = ibv_reg_mr(FakePd(), b, size, access);  // not a constant: the iova2 path
  printf("registered=%d dereg=%d reg_calls=%lu\n", mr != nullptr, mr ? ibv_dereg_mr(mr) : -1,
         ibverbs_standin_count("reg"));
  return 0;
}

ibv_mr* g_to_release;
void* Releaser(void*) {
  usleep(100000);
  ibv_dereg_mr(g_to_release);
  return nullptr;
}

int Wait(size_t size) {
  char* b[3];
  for (char*& x : b) x = static_cast<char*>(aligned_alloc(4096, size));
  ibv_mr* m0 = ibv_reg_mr(FakePd(), b[0], size, IBV_ACCESS_LOCAL_WRITE);
  g_to_release = ibv_reg_mr(FakePd(), b[1], size, IBV_ACCESS_LOCAL_WRITE);
  pthread_t t;
  pthread_create(&t, nullptr, Releaser, nullptr);
  const uint64_t t0 = NowUs();
  ibv_mr* m2 = ibv_reg_mr(FakePd(), b[2], size, IBV_ACCESS_LOCAL_WRITE);
  const int err = m2 == nullptr ? errno : 0;
  const uint64_t us = NowUs() - t0;
  pthread_join(t, nullptr);
  printf("first=%d third=%d errno=%s third_us=%llu\n", m0 != nullptr, m2 != nullptr,
         err == 0 ? "0" : strerrorname_np(err), static_cast<unsigned long long>(us));
  return 0;
}

bool RegDereg(char* buf, size_t size) {
  ibv_mr* mr = ibv_reg_mr(FakePd(), buf, size, IBV_ACCESS_LOCAL_WRITE);
  return mr != nullptr && ibv_dereg_mr(mr) == 0;
}

// A child that has not exited after 5 s is counted as hung and killed.
int ForkStorm(int forks) {
  constexpr size_t kSize = 65536;
  return dmashim::testing::ForkStorm(
      forks, 10,
      [](const std::atomic<bool>& stop, std::atomic<long>& rounds) {
        char* b = static_cast<char*>(aligned_alloc(4096, kSize));
        while (!stop.load(std::memory_order_relaxed)) {
          RegDereg(b, kSize);
          rounds.fetch_add(1, std::memory_order_relaxed);
        }
        free(b);
      },
      [] {
        char* b = static_cast<char*>(aligned_alloc(4096, kSize));
        return b != nullptr && RegDereg(b, kSize);
      });
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) return 2;
  const std::string mode = argv[1];
  if (mode == "reg" && argc >= 4) {
    bool fork_init = false, keep = false;
    for (int i = 4; i < argc; ++i) {
      fork_init |= strcmp(argv[i], "fork_init") == 0;
      keep |= strcmp(argv[i], "keep") == 0;
    }
    return Reg(atoi(argv[2]), strtoull(argv[3], nullptr, 10), fork_init, keep);
  }
  if (mode == "optional") return Optional(strtoull(argv[2], nullptr, 10));
  if (mode == "wait") return Wait(strtoull(argv[2], nullptr, 10));
  if (mode == "forkstorm") return ForkStorm(atoi(argv[2]));
  fprintf(stderr,
          "usage: ibv_prog reg N SIZE [fork_init] [keep] | optional SIZE | wait SIZE | "
          "forkstorm FORKS\n");
  return 2;
}
