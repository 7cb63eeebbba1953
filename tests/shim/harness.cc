#include "tests/shim/harness.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cstdio>
#include <algorithm>
#include <atomic>
#include <filesystem>
#include <map>
#include <fstream>

#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "exporter/summary.h"
#include "gtest/gtest.h"

namespace dmashim::testing {
namespace {

int64_t NowMs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

std::string ReadAll(int fd) {
  std::string s;
  char buf[4096];
  ssize_t n;
  while ((n = read(fd, buf, sizeof buf)) > 0) s.append(buf, static_cast<size_t>(n));
  return s;
}

std::map<std::string, std::string> ParseKv(const std::string& out) {
  std::map<std::string, std::string> kv;
  for (absl::string_view line : absl::StrSplit(out, '\n')) {
    std::map<std::string, std::string> here;
    for (absl::string_view word : absl::StrSplit(line, ' ', absl::SkipEmpty())) {
      std::pair<std::string, std::string> p = absl::StrSplit(word, absl::MaxSplits('=', 1));
      if (!p.second.empty() || absl::StrContains(word, "=")) here[p.first] = p.second;
    }
    if (!here.empty()) kv = here;
  }
  return kv;
}

bool EveryoneCanReach(const std::string& path) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0 || (st.st_mode & S_IROTH) == 0) return false;
  for (std::string dir = path; dir.size() > 1;) {
    dir = dir.substr(0, std::max<size_t>(dir.rfind('/'), 1));
    if (stat(dir.c_str(), &st) != 0 || (st.st_mode & S_IXOTH) == 0) return false;
  }
  return true;
}

// TempDirs not yet destroyed. A test binary whose tests are all done with one still alive would
// leave it in /tmp (a suite-wide directory held by a leaked pointer did, once per process).
std::atomic<int> g_live_temp_dirs{0};

class NoTempDirOutlivesTheTests : public ::testing::Environment {
 public:
  void TearDown() override {
    EXPECT_EQ(g_live_temp_dirs.load(), 0) << "a TempDir outlived the tests: it would be left in /tmp "
                                      "(destroy suite-wide ones in TearDownTestSuite)";
  }
};
[[maybe_unused]] ::testing::Environment* const g_temp_dir_check =
    ::testing::AddGlobalTestEnvironment(new NoTempDirOutlivesTheTests);

}  // namespace

std::string ReachableByEveryone(const std::string& path) {
  if (path.empty() || path[0] != '/' || EveryoneCanReach(path)) return path;
  static std::map<std::string, std::string>* copies = new std::map<std::string, std::string>;
  static std::string* dir = [] {
    char tmpl[] = "/tmp/dmashim-shared-XXXXXX";
    auto* d = new std::string(mkdtemp(tmpl));
    chmod(d->c_str(), 0755);
    atexit([] {
      std::error_code ec;
      std::filesystem::remove_all(*dir, ec);
    });
    return d;
  }();
  auto it = copies->find(path);
  if (it != copies->end()) return it->second;
  const std::string to = *dir + "/" + std::to_string(copies->size()) + "-" +
                         path.substr(path.rfind('/') + 1);
  std::error_code ec;
  std::filesystem::copy_file(path, to, std::filesystem::copy_options::overwrite_existing, ec);
  chmod(to.c_str(), 0755);
  (*copies)[path] = to;
  return to;
}

TempDir::TempDir() {
  char tmpl[] = "/tmp/dmashim-test-XXXXXX";
  path_ = mkdtemp(tmpl);
  chmod(path_.c_str(), 0755);
  ++g_live_temp_dirs;
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
  --g_live_temp_dirs;
}

std::string TempDir::Write(const std::string& name, const std::string& text) const {
  const std::string p = path_ + "/" + name;
  std::ofstream(p) << text;
  return p;
}

Child::Child(const RunSpec& spec_in) {
  // Another user cannot reach a build tree inside a private directory (a CI clone under a 0700
  // mktemp directory, /root): give it copies it can read.
  RunSpec spec = spec_in;
  std::string preload_path = ShimPath();
  if (spec.uid != 0) {
    spec.argv[0] = ReachableByEveryone(spec.argv[0]);
    preload_path = ReachableByEveryone(preload_path);
  }
  int in[2], out[2], err[2];
  if (pipe2(in, O_CLOEXEC) || pipe2(out, O_CLOEXEC) || pipe2(err, O_CLOEXEC)) abort();
  start_ms_ = NowMs();
  pid_ = fork();
  if (pid_ == 0) {
    dup2(in[0], 0);
    dup2(out[1], 1);
    dup2(err[1], 2);
    unsetenv("LD_PRELOAD");
    unsetenv("DMASHIM_CONFIG");
    unsetenv("DMASHIM_RUN_DIR");
    if (spec.preload) setenv("LD_PRELOAD", preload_path.c_str(), 1);
    if (!spec.config.empty()) setenv("DMASHIM_CONFIG", spec.config.c_str(), 1);
    if (!spec.run_dir.empty()) setenv("DMASHIM_RUN_DIR", spec.run_dir.c_str(), 1);
    for (const auto& [k, v] : spec.env) setenv(k.c_str(), v.c_str(), 1);
    if (spec.memlock_bytes != 0) {
      rlimit rl{spec.memlock_bytes, spec.memlock_bytes};
      setrlimit(RLIMIT_MEMLOCK, &rl);
    }
    if (spec.uid != 0 && (setgid(spec.uid) != 0 || setuid(spec.uid) != 0)) _exit(126);
    std::vector<char*> argv;
    for (const std::string& a : spec.argv) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    execv(argv[0], argv.data());
    _exit(127);
  }
  close(in[0]);
  close(out[1]);
  close(err[1]);
  in_ = in[1];
  out_ = out[0];
  err_ = err[0];
}

Child::~Child() {
  if (pid_ > 0) {
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  }
  for (int fd : {in_, out_, err_}) {
    if (fd >= 0) close(fd);
  }
}

std::string Child::ReadLine() {
  for (;;) {
    const size_t nl = pending_out_.find('\n');
    if (nl != std::string::npos) {
      std::string line = pending_out_.substr(0, nl);
      collected_out_ += pending_out_.substr(0, nl + 1);
      pending_out_.erase(0, nl + 1);
      return line;
    }
    pollfd p{out_, POLLIN, 0};
    if (poll(&p, 1, 60'000) <= 0) return "";
    char buf[512];
    ssize_t n = read(out_, buf, sizeof buf);
    if (n <= 0) return "";
    pending_out_.append(buf, static_cast<size_t>(n));
  }
}

void Child::WriteLine(const std::string& line) {
  const std::string s = line + "\n";
  if (write(in_, s.data(), s.size()) < 0) perror("write to child");
}

RunResult Child::Wait() {
  close(in_);
  in_ = -1;
  RunResult r;
  r.out = collected_out_ + pending_out_ + ReadAll(out_);
  r.err = ReadAll(err_);
  int st = 0;
  waitpid(pid_, &st, 0);
  pid_ = -1;
  r.elapsed_ms = NowMs() - start_ms_;
  r.exit_code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  r.kv = ParseKv(r.out);
  return r;
}

RunResult ShimRuns::Run(const std::string& program, bool shim, std::vector<std::string> args,
                        const std::string& toml, std::map<std::string, std::string> env) {
  RunSpec spec;
  spec.argv = {program};
  spec.argv.insert(spec.argv.end(), args.begin(), args.end());
  spec.env = std::move(env);
  if (shim) {
    spec.preload = true;
    spec.config = dir_.Write("dmashim.toml", toml);
    spec.run_dir = dir_.path() + "/run" + std::to_string(runs_++);
    mkdir(spec.run_dir.c_str(), 0700);
    last_run_dir_ = spec.run_dir;
  }
  return RunProgram(spec);
}

const PoolStats* ShimRuns::Pool(const std::string& name, pid_t pid) {
  snaps_ = Segments(last_run_dir_);
  if (pid != 0) return FindPool(snaps_, pid, name);
  if (snaps_.size() != 1) return nullptr;
  for (const PoolStats* p : snaps_[0].pools) {
    if (name == p->name) return p;
  }
  return nullptr;
}

RunSpec PinnedAsNobody(const TempDir& dir, std::vector<std::string> argv, bool shim) {
  RunSpec spec;
  spec.argv = std::move(argv);
  spec.uid = kPinnedUid;
  spec.memlock_bytes = kPinnedMemlockLimit;
  if (shim) {
    spec.preload = true;
    spec.config = dir.Write("dmashim.toml", R"(
[pool.pinned]
match    = { call = "mlock", size = "1MiB" }
reserve  = 4
prefault = "startup"
mode     = "fail-fast"
)");
    spec.run_dir = dir.path() + "/run";
    mkdir(spec.run_dir.c_str(), 0700);
    if (chown(spec.run_dir.c_str(), kPinnedUid, kPinnedUid) != 0) {
      fprintf(stderr, "harness: chown %s: %s\n", spec.run_dir.c_str(), strerror(errno));
    }
  }
  return spec;
}

RunResult RunProgram(const RunSpec& spec) { return Child(spec).Wait(); }

std::string ShimPath() { return DMASHIM_TEST_SHIM_PATH; }
std::string ProbePath() { return DMASHIM_TEST_PROBE_PATH; }

std::vector<Snapshot> Segments(const std::string& run_dir) { return ReadAllSegments(run_dir); }

const PoolStats* FindPool(const std::vector<Snapshot>& snaps, pid_t pid, const std::string& name) {
  for (const Snapshot& s : snaps) {
    if (s.pid != pid) continue;
    for (const PoolStats* p : s.pools) {
      if (name == p->name) return p;
    }
  }
  return nullptr;
}

uint64_t Get(const Counter& c) { return c.load(std::memory_order_relaxed); }
int64_t Get(const Gauge& g) { return g.load(std::memory_order_relaxed); }

}  // namespace dmashim::testing
