// Runs real programs with and without libdmashim.so preloaded, for the shim's integration tests.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "exporter/segment_reader.h"

namespace dmashim::testing {

// A scratch directory (config files, the run directory, hugetlbfs mounts), removed at the end.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  // Writes `text` to path()/name and returns the full path.
  std::string Write(const std::string& name, const std::string& text) const;

 private:
  std::string path_;
};

struct RunSpec {
  std::vector<std::string> argv;                // argv[0] is the program's path
  bool preload = false;                         // LD_PRELOAD=libdmashim.so
  std::string config;                           // DMASHIM_CONFIG (empty: unset)
  std::string run_dir;                          // DMASHIM_RUN_DIR (empty: unset)
  std::map<std::string, std::string> env;       // more variables
  uid_t uid = 0;                                // run as this user (0: unchanged)
  uint64_t memlock_bytes = 0;                   // RLIMIT_MEMLOCK for the child (0: unchanged)
};

struct RunResult {
  int exit_code = -1;  // exit status, or 128+signal
  std::string out;
  std::string err;
  int64_t elapsed_ms = 0;
  // "key=value" pairs from the last stdout line that has any.
  std::map<std::string, std::string> kv;
};

// A started program with pipes to its stdin and stdout.
class Child {
 public:
  explicit Child(const RunSpec& spec);
  ~Child();
  // Reads one line of stdout (without the newline); empty at EOF.
  std::string ReadLine();
  void WriteLine(const std::string& line);
  // Closes stdin, reads the rest of stdout and stderr, waits.
  RunResult Wait();
  pid_t pid() const { return pid_; }

 private:
  pid_t pid_ = -1;
  int in_ = -1, out_ = -1, err_ = -1;
  std::string pending_out_;
  std::string collected_out_;
  int64_t start_ms_ = 0;
};

RunResult RunProgram(const RunSpec& spec);

// Pinned memory as an unprivileged user: root has CAP_IPC_LOCK and bypasses RLIMIT_MEMLOCK, so
// `argv` runs as nobody with an 8 MiB limit (this machine's hard limit). With `shim`, preloaded
// with a fail-fast pinned pool ("pinned": mlock calls of 1 MiB) holding 4 MiB of that budget from
// start-up; its run directory is dir.path()/run, owned by nobody.
inline constexpr uid_t kPinnedUid = 65534;
inline constexpr uint64_t kPinnedMemlockLimit = 8 << 20;
RunSpec PinnedAsNobody(const TempDir& dir, std::vector<std::string> argv, bool shim);

std::string ShimPath();

// `path` itself when every user can read it (and reach it), else a copy that every user can: for
// programs run as another user (RunSpec::uid), whose build tree may sit in a private directory.
std::string ReachableByEveryone(const std::string& path);
std::string ProbePath();

// Runs one program with or without the shim, as the CUDA and ibverbs tests do: each shim run gets a
// configuration and a run directory of its own under a scratch directory, and the last shim run's
// pools can be read back.
class ShimRuns {
 public:
  RunResult Run(const std::string& program, bool shim, std::vector<std::string> args,
                const std::string& toml, std::map<std::string, std::string> env);
  // The pool `name` in the last shim run's segments: of process `pid` when it is not 0 (a fork
  // child writes a segment of its own), else of the run's only segment. nullptr when absent.
  const PoolStats* Pool(const std::string& name, pid_t pid = 0);

 private:
  TempDir dir_;
  int runs_ = 0;
  std::string last_run_dir_;
  std::vector<Snapshot> snaps_;
};

// Every stats segment in `run_dir` (as dmashim-exporter reads them).
std::vector<Snapshot> Segments(const std::string& run_dir);
// The pool `name` of the segment written by `pid`, or nullptr.
const PoolStats* FindPool(const std::vector<Snapshot>& snaps, pid_t pid, const std::string& name);

uint64_t Get(const Counter& c);
int64_t Get(const Gauge& g);

}  // namespace dmashim::testing
