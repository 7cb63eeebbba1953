// Issue 3, tests item 5: a real client. PostgreSQL 15 from Debian with huge_pages = on maps its main
// shared memory with one mmap(MAP_SHARED | MAP_ANONYMOUS | MAP_HUGETLB); under the shim that call is
// a guarded pass-through routed to the pool [pool.pg].
//
//   (a) PostgreSQL runs under the shim and completes a short pgbench; the postmaster's segment shows
//       the huge-page mapping (alloc_source == 1).
//   (b) Another process holds every free huge page. With mode "timeout:10s" PostgreSQL under the shim
//       waits until the pages come back (released ~2 s after the postmaster is seen blocked), starts,
//       and the wait is recorded; with "fail-fast" (and with a short timeout that expires) it fails
//       with the same FATAL/HINT lines as without the shim.
//
// Each test makes a throwaway cluster in a temp dir (initdb as the unprivileged user postgres,
// loopback TCP on a free port, Unix socket in the temp dir) and always stops the server it started.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pwd.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "tests/common/hugepages.h"
#include "tests/shim/harness.h"

namespace dmashim::testing {
namespace {

using std::chrono::milliseconds;
using std::chrono::steady_clock;

const std::string kPgBin = "/usr/lib/postgresql/15/bin";

// A free TCP port on the loopback interface (the kernel's choice; released before use).
int FreeLoopbackPort() {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  socklen_t len = sizeof a;
  int port = -1;
  if (bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
      getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0) {
    port = ntohs(a.sin_port);
  }
  close(fd);
  return port;
}

// Whether the child `pid` has exited (it stays reapable: WNOWAIT).
bool Exited(pid_t pid) {
  siginfo_t info{};
  if (waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOHANG | WNOWAIT) != 0) return true;
  return info.si_pid == pid;
}

bool WaitExited(pid_t pid, milliseconds limit) {
  const auto end = steady_clock::now() + limit;
  while (!Exited(pid)) {
    if (steady_clock::now() > end) return false;
    std::this_thread::sleep_for(milliseconds(20));
  }
  return true;
}

std::string ReadFile(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

// The line of `log` that contains `needle` and the HINT line after it ("" when absent).
std::string LineWith(const std::string& log, const std::string& needle, std::string* hint) {
  const std::vector<std::string> lines = Lines(log);
  for (size_t i = 0; i < lines.size(); ++i) {
    if (lines[i].find(needle) == std::string::npos) continue;
    if (hint != nullptr) {
      *hint = i + 1 < lines.size() && lines[i + 1].rfind("HINT:", 0) == 0 ? lines[i + 1] : "";
    }
    return lines[i];
  }
  return "";
}

// The number after `prefix` on the first line starting with it (pgbench's summary), or -1.
double NumberAfter(const std::string& text, const std::string& prefix) {
  for (const std::string& line : Lines(text)) {
    if (line.rfind(prefix, 0) == 0) return std::stod(line.substr(prefix.size()));
  }
  return -1;
}

std::string PoolToml(const std::string& mode) {
  return "[pool.pg]\n"
         "match = { call = \"mmap\", hugetlb = true, size = \"2MiB\" }\n"
         "mode = \"" + mode + "\"\n";
}

constexpr char kMapError[] = "could not map anonymous shared memory";

class PostgresTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (access((kPgBin + "/postgres").c_str(), X_OK) != 0) {
      if (InCi()) GTEST_FAIL() << "CI=true and PostgreSQL 15 is missing (scripts/install-deps.sh)";
      GTEST_SKIP() << kPgBin << "/postgres is missing: apt-get install postgresql (Debian 12)";
    }
    const passwd* pw = getpwnam("postgres");
    if (geteuid() != 0 || pw == nullptr) {
      if (InCi()) GTEST_FAIL() << "CI=true: these tests need root and the user postgres";
      GTEST_SKIP() << "needs root (PostgreSQL runs as the user postgres) and that user";
    }
    uid_ = pw->pw_uid;
    root_ = dir_.path() + "/pg";
    ASSERT_EQ(mkdir(root_.c_str(), 0755), 0);
    ASSERT_EQ(chown(root_.c_str(), pw->pw_uid, pw->pw_gid), 0);
    data_ = root_ + "/data";
    run_dir_ = root_ + "/run";  // the shim creates it, 0700, owned by postgres
    // PostgreSQL's tools look at their working directory; ours may be unreadable to postgres.
    char cwd[4096];
    ASSERT_NE(getcwd(cwd, sizeof cwd), nullptr);
    old_cwd_ = cwd;
    ASSERT_EQ(chdir(root_.c_str()), 0);
    port_ = FreeLoopbackPort();
    ASSERT_GT(port_, 0);

    const RunResult init = Run({kPgBin + "/initdb", "-D", data_, "-A", "trust", "-U", "postgres",
                                "--no-sync", "--no-instructions"});
    ASSERT_EQ(init.exit_code, 0) << init.out << init.err;

    std::vector<std::string> c = {kPgBin + "/postgres", "-D", data_, "-C",
                                  "shared_memory_size_in_huge_pages"};
    AddSettings(&c);
    const RunResult size = Run(c);
    ASSERT_EQ(size.exit_code, 0) << size.err;
    pages_ = std::stol(size.out);
    ASSERT_GT(pages_, 8) << "shared_buffers = 64MB should need tens of 2 MiB pages";
    DMASHIM_REQUIRE_FREE_HUGE_PAGES(pages_ + 4);
  }

  void TearDown() override {
    if (server_ != nullptr) Stop();
    if (!old_cwd_.empty() && chdir(old_cwd_.c_str()) != 0) perror("chdir back");
  }

  // Same server settings for `postgres -C` and the server itself.
  void AddSettings(std::vector<std::string>* argv) const {
    for (const std::string& s :
         std::vector<std::string>{"listen_addresses=127.0.0.1", "port=" + std::to_string(port_),
          "unix_socket_directories=" + root_, "huge_pages=on", "shared_buffers=64MB",
          "max_connections=20", "fsync=off", "synchronous_commit=off", "log_line_prefix=",
          "lc_messages=C"}) {
      argv->push_back("-c");
      argv->push_back(s);
    }
  }

  RunSpec Spec(std::vector<std::string> argv) const {
    RunSpec spec;
    spec.argv = std::move(argv);
    spec.uid = uid_;
    spec.env = {{"HOME", root_}, {"PGCONNECT_TIMEOUT", "10"}, {"LC_ALL", "C"}};
    return spec;
  }

  RunResult Run(std::vector<std::string> argv) const { return RunProgram(Spec(std::move(argv))); }

  // A client tool against the server on loopback TCP.
  RunResult Client(const std::string& tool, std::vector<std::string> args) const {
    std::vector<std::string> argv = {kPgBin + "/" + tool, "-h", "127.0.0.1", "-p",
                                     std::to_string(port_), "-U", "postgres"};
    argv.insert(argv.end(), args.begin(), args.end());
    return Run(argv);
  }

  // Starts the postmaster itself (no pg_ctl, so the child's pid is the postmaster's pid), with or
  // without the shim. `mode` empty: no shim.
  void Start(const std::string& mode) {
    std::vector<std::string> argv = {kPgBin + "/postgres", "-D", data_};
    AddSettings(&argv);
    RunSpec spec = Spec(argv);
    if (!mode.empty()) {
      spec.preload = true;
      spec.config = dir_.Write("dmashim-" + std::to_string(++configs_) + ".toml", PoolToml(mode));
      spec.run_dir = run_dir_;
    }
    server_ = std::make_unique<Child>(spec);
    server_pid_ = server_->pid();
  }

  // Waits until postmaster.pid says "ready" (line 8). False when the server exited or time ran out.
  bool WaitReady(milliseconds limit) {
    const auto end = steady_clock::now() + limit;
    while (steady_clock::now() < end) {
      if (Exited(server_pid_)) return false;
      const std::vector<std::string> l = Lines(ReadFile(data_ + "/postmaster.pid"));
      if (l.size() >= 8 && l[0] == std::to_string(server_pid_) &&
          l[7].find("ready") != std::string::npos) {
        return true;
      }
      std::this_thread::sleep_for(milliseconds(50));
    }
    return false;
  }

  // Stops the server (fast shutdown, then immediate, then SIGKILL) and collects its log (stderr).
  RunResult Stop() {
    if (!Exited(server_pid_)) {
      kill(server_pid_, SIGINT);
      if (!WaitExited(server_pid_, milliseconds(15'000))) {
        ADD_FAILURE() << "PostgreSQL ignored a fast shutdown for 15 s";
        kill(server_pid_, SIGQUIT);
        if (!WaitExited(server_pid_, milliseconds(5'000))) kill(server_pid_, SIGKILL);
      }
    }
    // The postmaster has exited; its children leave within moments (postmaster-death pipe), then
    // stderr reaches EOF.
    RunResult r = server_->Wait();
    server_.reset();
    return r;
  }

  // Waits for a server that should fail to start; returns its result.
  RunResult WaitFailed(milliseconds limit) {
    EXPECT_TRUE(WaitExited(server_pid_, limit)) << "PostgreSQL did not exit";
    return Stop();
  }

  // The postmaster's [pool.pg] as it is now: a copy of the segments, and the pool in it (null when
  // the postmaster has no segment or no such pool).
  struct PoolView {
    std::vector<Snapshot> snaps;
    const PoolStats* pool = nullptr;
    const PoolStats* operator->() const { return pool; }
    bool has_value() const { return pool != nullptr; }
  };
  PoolView PgPool() const {
    PoolView v;
    v.snaps = Segments(run_dir_);
    v.pool = FindPool(v.snaps, server_pid_, "pg");
    return v;
  }

  TempDir dir_;
  std::string root_, data_, run_dir_, old_cwd_;
  uid_t uid_ = 0;
  int port_ = -1;
  long pages_ = 0;
  int configs_ = 0;
  std::unique_ptr<Child> server_;
  pid_t server_pid_ = -1;
};

// (a) PostgreSQL under the shim serves a real workload; its huge-page mapping went through the pool.
TEST_F(PostgresTest, RunsPgbenchUnderTheShim) {
  Start("timeout:10s");
  ASSERT_TRUE(WaitReady(milliseconds(20'000))) << "PostgreSQL did not start under the shim";

  // The shared memory really is huge pages (hugetlb mappings show as /anon_hugepage).
  const std::string maps = ReadFile("/proc/" + std::to_string(server_pid_) + "/maps");
  EXPECT_NE(maps.find("anon_hugepage"), std::string::npos) << maps;

  const RunResult init = Client("pgbench", {"-i", "-s", "1", "-q", "postgres"});
  ASSERT_EQ(init.exit_code, 0) << init.out << init.err;
  const RunResult bench = Client("pgbench", {"-c", "4", "-j", "2", "-t", "250", "postgres"});
  ASSERT_EQ(bench.exit_code, 0) << bench.out << bench.err;
  EXPECT_NE(bench.out.find("number of transactions actually processed: 1000/1000"),
            std::string::npos)
      << bench.out;
  EXPECT_EQ(NumberAfter(bench.out, "number of failed transactions: "), 0) << bench.out;
  const double tps = NumberAfter(bench.out, "tps = ");
  EXPECT_GT(tps, 0) << bench.out;
  RecordProperty("pgbench_tps", std::to_string(tps));
  std::cout << "pgbench under the shim: 1000 transactions, tps = " << tps << "\n";

  const PoolView pool = PgPool();
  ASSERT_TRUE(pool.has_value()) << "no [pool.pg] in the postmaster's segment";
  EXPECT_EQ(Get(pool->alloc_source), 1u);  // the one MAP_SHARED|MAP_HUGETLB mapping
  EXPECT_EQ(Get(pool->alloc_waited), 0u);
  EXPECT_EQ(Get(pool->fail_fast) + Get(pool->fail_timeout) + Get(pool->fail_source), 0u);

  const RunResult log = Stop();
  EXPECT_EQ(log.exit_code, 0) << log.err;
  EXPECT_EQ(log.err.find("dmashim:"), std::string::npos) << "the shim complained:\n" << log.err;
  EXPECT_NE(log.err.find("database system is shut down"), std::string::npos) << log.err;
}

// (b) Every free huge page is held by another process, released ~2 s after the postmaster is seen
// waiting: under the shim with timeout:10s PostgreSQL starts, and the wait is in its segment.
TEST_F(PostgresTest, TimeoutModeWaitsForHugePagesAndStarts) {
  HugePageHog hog(-1, 30);
  ASSERT_TRUE(hog.ok()) << hog.error();
  ASSERT_GE(hog.pages(), pages_);
  ASSERT_LT(FreeHugePages2M(), pages_) << "the hog must leave too few pages for PostgreSQL";

  Start("timeout:10s");
  // The postmaster's mmap failed and it is waiting in the pool (the blocked-threads gauge).
  const auto end = steady_clock::now() + milliseconds(15'000);
  bool blocked = false;
  while (!blocked && steady_clock::now() < end && !Exited(server_pid_)) {
    const PoolView p = PgPool();
    blocked = p.has_value() && Get(p->blocked_now) == 1;
    if (!blocked) std::this_thread::sleep_for(milliseconds(20));
  }
  ASSERT_TRUE(blocked) << "the postmaster never waited in [pool.pg]";
  EXPECT_FALSE(WaitReady(milliseconds(2'000))) << "started although the hog holds the pages";
  const auto released = steady_clock::now();
  ASSERT_TRUE(hog.Release());

  ASSERT_TRUE(WaitReady(milliseconds(15'000))) << "PostgreSQL did not start after the release";
  const double after_release_s =
      std::chrono::duration<double>(steady_clock::now() - released).count();
  const RunResult q = Client("psql", {"-X", "-Atc", "select 1", "postgres"});
  EXPECT_EQ(q.exit_code, 0) << q.err;
  EXPECT_EQ(q.out, "1\n");

  const PoolView pool = PgPool();
  ASSERT_TRUE(pool.has_value());
  EXPECT_EQ(Get(pool->alloc_waited), 1u);
  EXPECT_EQ(Get(pool->alloc_source), 0u);
  EXPECT_EQ(Get(pool->fail_timeout) + Get(pool->fail_fast), 0u);
  EXPECT_EQ(Get(pool->wait_count), 1u);
  EXPECT_EQ(Get(pool->blocked_now), 0);
  const double waited_s = static_cast<double>(Get(pool->wait_sum_ns)) / 1e9;
  EXPECT_GE(waited_s, 1.5);
  EXPECT_LE(waited_s, 6.0);
  RecordProperty("blocked_seconds", std::to_string(waited_s));
  std::cout << "postmaster blocked " << waited_s << " s; ready " << after_release_s
            << " s after the release\n";

  const RunResult log = Stop();
  EXPECT_EQ(log.exit_code, 0) << log.err;
  EXPECT_EQ(log.err.find(kMapError), std::string::npos) << log.err;
}

// (b) Same hog, never released in time: without the shim PostgreSQL fails with FATAL "could not map
// anonymous shared memory"; under the shim with fail-fast, and with a timeout that expires, it
// fails the same way — same FATAL and HINT lines, same exit status — and the segment says why.
TEST_F(PostgresTest, FailFastAndExpiredTimeoutFailLikeWithoutTheShim) {
  HugePageHog hog(-1, 30);
  ASSERT_TRUE(hog.ok()) << hog.error();
  ASSERT_GE(hog.pages(), pages_);
  ASSERT_LT(FreeHugePages2M(), pages_);

  Start("");
  const RunResult plain = WaitFailed(milliseconds(20'000));
  std::string plain_hint;
  const std::string plain_fatal = LineWith(plain.err, kMapError, &plain_hint);
  ASSERT_NE(plain_fatal, "") << "without the shim:\n" << plain.err;
  EXPECT_EQ(plain_fatal.rfind("FATAL:", 0), 0u) << plain_fatal;
  EXPECT_NE(plain_fatal.find("Cannot allocate memory"), std::string::npos) << plain_fatal;
  EXPECT_NE(plain.exit_code, 0);

  Start("fail-fast");
  const RunResult fast = WaitFailed(milliseconds(20'000));
  std::string fast_hint;
  EXPECT_EQ(LineWith(fast.err, kMapError, &fast_hint), plain_fatal) << fast.err;
  EXPECT_EQ(fast_hint, plain_hint);
  EXPECT_EQ(fast.exit_code, plain.exit_code);
  EXPECT_EQ(fast.err.find("dmashim:"), std::string::npos) << fast.err;
  PoolView pool = PgPool();
  ASSERT_TRUE(pool.has_value());
  EXPECT_EQ(Get(pool->fail_fast), 1u);
  EXPECT_EQ(Get(pool->alloc_source) + Get(pool->alloc_waited), 0u);
  EXPECT_EQ(Get(pool->wait_count), 0u);  // it did not wait

  Start("timeout:1s");
  const RunResult timed = WaitFailed(milliseconds(20'000));
  std::string timed_hint;
  EXPECT_EQ(LineWith(timed.err, kMapError, &timed_hint), plain_fatal) << timed.err;
  EXPECT_EQ(timed_hint, plain_hint);
  EXPECT_EQ(timed.exit_code, plain.exit_code);
  pool = PgPool();
  ASSERT_TRUE(pool.has_value());
  EXPECT_EQ(Get(pool->fail_timeout), 1u);
  EXPECT_EQ(Get(pool->wait_count), 1u);
  const double waited_s = static_cast<double>(Get(pool->wait_sum_ns)) / 1e9;
  EXPECT_GE(waited_s, 0.95);
  EXPECT_LE(waited_s, 3.0);
  std::cout << "plain: " << plain_fatal << "\n      " << plain_hint << "\ntimeout:1s gave up after "
            << waited_s << " s\n";
}

}  // namespace
}  // namespace dmashim::testing
