// The dmashim command: `dmashim run` preloads the shim into a program and reports what its pools
// did; `stat` and `ctl` read and steer live processes through their stats segments.
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "exporter/control.h"
#include "exporter/stat.h"
#include "exporter/summary.h"
#include "shim/config.h"

#ifndef DMASHIM_BUILD_SHIM_PATH
#define DMASHIM_BUILD_SHIM_PATH ""
#endif
#ifndef DMASHIM_INSTALL_SHIM_PATH
#define DMASHIM_INSTALL_SHIM_PATH "/usr/lib/x86_64-linux-gnu/libdmashim.so"
#endif

namespace dmashim {
namespace {

constexpr char kUsage[] =
    "usage: dmashim run [--config FILE] [--summary] [--exporter] -- PROGRAM [ARGS...]\n"
    "       dmashim stat [--watch] [--sites] [--advise] [--json]\n"
    "       dmashim ctl PID resize POOL N\n"
    "\n"
    "run       start PROGRAM with libdmashim.so preloaded (an existing LD_PRELOAD is kept);\n"
    "          the exit status is PROGRAM's (128+N when killed by signal N)\n"
    "  --config FILE  use FILE as the configuration (sets DMASHIM_CONFIG)\n"
    "  --summary      print what each pool did when PROGRAM exits\n"
    "  --exporter     start a private dmashim-exporter for the run and print its address\n"
    "stat      a table of the processes and pools in the run directory\n"
    "  --sites        the call sites that waited or failed, symbolized (function and object)\n"
    "  --advise       suggested reserve per pool: high-water mark + 25% headroom (at least +1)\n"
    "  --json         machine-readable output\n"
    "  --watch        refresh every second until interrupted\n"
    "ctl       PID resize POOL N: set the reserve of POOL in the running process PID to N\n"
    "          elements (its owner or root only); exit status 0 when done, 1 otherwise\n";

bool Exists(const std::string& p) { return !p.empty() && access(p.c_str(), R_OK) == 0; }

std::string SelfDir() {
  char buf[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) return "";
  buf[n] = '\0';
  std::string s(buf);
  return s.substr(0, s.rfind('/'));
}

// The shim to preload, as an absolute path (ld.so ignores relative LD_PRELOAD entries in setuid
// programs and resolves them against the cwd otherwise).
std::string FindShim() {
  if (const char* env = getenv("DMASHIM_LIBRARY"); env && env[0] == '/' && Exists(env)) return env;
  const std::string dir = SelfDir();
  // Beside this binary first (the build tree's exporter/../shim, or an install's bin/../lib), so an
  // installed dmashim never picks up a build tree that happens to still exist.
  for (const std::string& c :
       {dir + "/../shim/libdmashim.so", dir + "/../lib/x86_64-linux-gnu/libdmashim.so",
        std::string(DMASHIM_INSTALL_SHIM_PATH), std::string(DMASHIM_BUILD_SHIM_PATH)}) {
    char real[PATH_MAX];
    if (Exists(c) && realpath(c.c_str(), real) != nullptr) return real;
  }
  return "";
}

int FreeLoopbackPort() {
  int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  int port = -1;
  if (s >= 0 && bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
      getsockname(s, reinterpret_cast<sockaddr*>(&a), &len) == 0) {
    port = ntohs(a.sin_port);
  }
  if (s >= 0) close(s);
  return port;
}

pid_t StartExporter(const std::string& run_dir, int port) {
  const std::string exe = SelfDir() + "/dmashim-exporter";
  const std::string listen = absl::StrCat("127.0.0.1:", port);
  pid_t pid = fork();
  if (pid == 0) {
    unsetenv("LD_PRELOAD");
    execl(exe.c_str(), exe.c_str(), "--listen", listen.c_str(), "--run-dir", run_dir.c_str(),
          static_cast<char*>(nullptr));
    fprintf(stderr, "dmashim: cannot start %s: %s\n", exe.c_str(), strerror(errno));
    _exit(127);
  }
  return pid;
}

int Run(int argc, char** argv) {
  std::string config;
  bool summary = false, exporter = false;
  int i = 0;
  for (; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--") {
      ++i;
      break;
    } else if (a == "--config" && i + 1 < argc) {
      config = argv[++i];
    } else if (a == "--summary") {
      summary = true;
    } else if (a == "--exporter") {
      exporter = true;
    } else if (!a.empty() && a[0] == '-') {
      fprintf(stderr, "dmashim run: unknown option %s\n%s", a.c_str(), kUsage);
      return 2;
    } else {
      break;  // the program, without "--"
    }
  }
  if (i >= argc) {
    fprintf(stderr, "dmashim run: no program given\n%s", kUsage);
    return 2;
  }
  const std::string shim = FindShim();
  if (shim.empty()) {
    fprintf(stderr, "dmashim run: libdmashim.so not found (set DMASHIM_LIBRARY to its path)\n");
    return 2;
  }
  if (!config.empty()) {
    char real[PATH_MAX];
    if (realpath(config.c_str(), real) == nullptr) {
      fprintf(stderr, "dmashim run: --config %s: %s\n", config.c_str(), strerror(errno));
      return 2;
    }
    setenv("DMASHIM_CONFIG", real, 1);
  }
  std::string preload = shim;
  if (const char* old = getenv("LD_PRELOAD"); old != nullptr && old[0] != '\0') {
    bool present = false;
    for (absl::string_view p : absl::StrSplit(old, absl::ByAnyChar(": "), absl::SkipEmpty())) {
      present |= p == shim;
    }
    preload = present ? std::string(old) : absl::StrCat(shim, ":", old);
  }
  setenv("LD_PRELOAD", preload.c_str(), 1);

  // Everything this run starts — forked and exec'd descendants too — carries the session, so the
  // summary finds their segments.
  char session[32];
  timespec now;
  clock_gettime(CLOCK_REALTIME, &now);
  snprintf(session, sizeof session, "run-%d-%lld", static_cast<int>(getpid()),
           static_cast<long long>(now.tv_sec) * 1000 + now.tv_nsec / 1'000'000);
  setenv("DMASHIM_SESSION", session, 1);

  const Config cfg = LoadConfig(ProcessEnvironment(), false);
  const std::string run_dir = ResolveRunDir(cfg.run_dir);
  if (!run_dir.empty()) {
    mkdir(run_dir.c_str(), 0700);  // so a private exporter has a directory to watch
    setenv("DMASHIM_RUN_DIR", run_dir.c_str(), 1);
  }
  pid_t exporter_pid = -1;
  if (exporter) {
    const int port = FreeLoopbackPort();
    exporter_pid = StartExporter(run_dir, port);
    fprintf(stderr, "dmashim: exporter for this run: http://127.0.0.1:%d/metrics\n", port);
  }

  // The parent ignores the terminal's SIGINT/SIGQUIT while the program runs, like a shell does.
  signal(SIGINT, SIG_IGN);
  signal(SIGQUIT, SIG_IGN);
  pid_t child = fork();
  if (child < 0) {
    perror("dmashim run: fork");
    return 1;
  }
  if (child == 0) {
    signal(SIGINT, SIG_DFL);
    signal(SIGQUIT, SIG_DFL);
    execvp(argv[i], argv + i);
    fprintf(stderr, "dmashim run: %s: %s\n", argv[i], strerror(errno));
    _exit(errno == ENOENT ? 127 : 126);
  }
  int status = 0;
  while (waitpid(child, &status, 0) < 0 && errno == EINTR) {
  }
  const int rc = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  if (summary) {
    std::vector<Snapshot> mine;
    for (Snapshot& s : ReadAllSegments(run_dir)) {
      if (s.session == session) mine.push_back(std::move(s));
    }
    fputs(FormatSummary(mine).c_str(), stderr);
  }
  if (exporter_pid > 0) {
    kill(exporter_pid, SIGTERM);
    waitpid(exporter_pid, nullptr, 0);
  }
  return rc;
}

volatile sig_atomic_t g_stop = 0;

int Stat(int argc, char** argv) {
  StatOptions o;
  bool watch = false;
  for (int i = 0; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--sites") o.sites = true;
    else if (a == "--advise") o.advise = true;
    else if (a == "--json") o.json = true;
    else if (a == "--watch") watch = true;
    else {
      fprintf(stderr, "dmashim stat: unknown option %s\n%s", a.c_str(), kUsage);
      return 2;
    }
  }
  const Config cfg = LoadConfig(ProcessEnvironment(), false);
  const std::string run_dir = ResolveRunDir(cfg.run_dir);
  if (!watch) {
    fputs(FormatStat(ReadAllSegments(run_dir), o).c_str(), stdout);
    return fflush(stdout) == 0 ? 0 : 1;
  }
  struct sigaction sa {};
  sa.sa_handler = [](int) { g_stop = 1; };
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  while (!g_stop) {
    const std::string body = FormatStat(ReadAllSegments(run_dir), o);
    if (!o.json) fputs("\033[H\033[2J", stdout);  // home, clear: one screen per refresh
    fputs(body.c_str(), stdout);
    fflush(stdout);
    timespec ts{1, 0};
    while (!g_stop && nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
  }
  return 0;
}

int Ctl(int argc, char** argv) {
  int32_t pid = 0;
  int64_t n = 0;
  if (argc != 4 || std::string(argv[1]) != "resize" || !absl::SimpleAtoi(argv[0], &pid) || pid <= 0 ||
      !absl::SimpleAtoi(argv[3], &n) || n < 0) {
    fprintf(stderr, "dmashim ctl: expected PID resize POOL N (N >= 0)\n%s", kUsage);
    return 2;
  }
  const Config cfg = LoadConfig(ProcessEnvironment(), false);
  const CtlOutcome r = CtlResize(ResolveRunDir(cfg.run_dir), pid, argv[2], n, geteuid());
  fprintf(r.exit_code == 0 ? stdout : stderr, "%s\n", r.message.c_str());
  return r.exit_code;
}

}  // namespace
}  // namespace dmashim

int main(int argc, char** argv) {
  if (argc < 2) {
    fputs(dmashim::kUsage, stderr);
    return 2;
  }
  const std::string verb = argv[1];
  if (verb == "run") return dmashim::Run(argc - 2, argv + 2);
  if (verb == "stat") return dmashim::Stat(argc - 2, argv + 2);
  if (verb == "ctl") return dmashim::Ctl(argc - 2, argv + 2);
  if (verb == "-h" || verb == "--help" || verb == "help") {
    fputs(dmashim::kUsage, stdout);
    return 0;
  }
  fprintf(stderr, "dmashim: unknown command %s\n%s", verb.c_str(), dmashim::kUsage);
  return 2;
}
