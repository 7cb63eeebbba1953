// The shim's configuration (DESIGN §6): a TOML file parsed with toml++ from DMASHIM_CONFIG, else
// /etc/dmashim/dmashim.toml, with single keys overridden by DMASHIM_<SECTION>_<KEY> variables.
// Every key is declared once, in config_keys.h; the parser, the env overrides and the README's option
// list all come from that table.
//
// A bad configuration never throws and never crashes the host: Load() returns a Config whose
// `errors` each name file, line, key and what was expected; the caller (the shim) prints them and
// goes to pass-through with telemetry, or exits when `strict = true`.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "pools/page_source.h"
#include "pools/policy.h"

namespace dmashim {

enum class CallFamily { kMmap, kShm, kMlock, kCuda, kIbverbs };
enum class Share { kAny, kPrivate, kShared };
enum class Prefault { kFirstUse, kStartup };

// Which intercepted calls a pool serves. Unset fields match anything.
struct PoolMatch {
  CallFamily call = CallFamily::kMmap;
  std::optional<bool> hugetlb;   // mmap/shm: MAP_HUGETLB / SHM_HUGETLB (or a hugetlbfs fd)
  size_t size = 0;               // element size in bytes ("2MiB"); 0 = the family's page size
  Share share = Share::kAny;     // MAP_PRIVATE / MAP_SHARED
  std::string caller;            // glob on the calling shared object's path or basename
};

struct PoolConfig {
  std::string name;  // the NAME of [pool.NAME]
  int line = 0;      // where the table starts, for messages
  PoolMatch match;
  SourceKind source = SourceKind::kHuge2M;  // derived: hugetlb size 1GiB → kHuge1G, mlock → kPinned
  size_t element_size = 0;                  // derived from match.size and the source's page size
  size_t reserve = 0;
  size_t max = 0;
  std::optional<size_t> keep;
  WaitPolicy policy;  // mode (+ interruptible)
  ZeroMode zero = ZeroMode::kBackground;
  Prefault prefault = Prefault::kFirstUse;
  absl::Duration retry_interval = absl::Milliseconds(50);
  absl::Duration retry_max = absl::Seconds(1);
  absl::Duration watchdog = absl::Seconds(10);  // a wait longer than this prints one warning line
};

struct Config {
  std::string path;  // the file read, or empty when none exists
  bool strict = false;
  bool stats = true;         // write the stats segment
  std::string run_dir;       // empty: /run/dmashim for root, else $XDG_RUNTIME_DIR/dmashim
  bool count_passthrough = false;
  bool biased_locks = true;  // MempoolOptions::biased_lock of every pool
  // intercept.* switches, one per family.
  bool intercept_mmap = true;
  bool intercept_shm = true;
  bool intercept_mlock = true;
  bool intercept_cuda = true;
  bool intercept_ibverbs = true;
  // Applied to guarded pass-through calls that no pool matches: the kernel's own behaviour.
  WaitPolicy default_policy;  // fail-fast
  std::vector<PoolConfig> pools;
  // "FILE:LINE: KEY: expected …, got …", one per problem; empty when the configuration is good.
  // Environment overrides read "environment: VAR (KEY): expected …, got …". When errors is not
  // empty the other fields are best-effort: the shim must not route through `pools`.
  std::vector<std::string> errors;
};

// Reads the environment through this, so tests can supply their own.
struct Environment {
  virtual ~Environment() = default;
  virtual const char* Get(const char* name) const = 0;
  // Names of all variables that start with "DMASHIM_".
  virtual std::vector<std::string> DmashimNames() const = 0;
};
const Environment& ProcessEnvironment();

// Parses TOML text. `filename` is used in messages only.
Config ParseConfig(absl::string_view toml_text, absl::string_view filename);

// Finds and parses the configuration: DMASHIM_CONFIG, else /etc/dmashim/dmashim.toml (a missing
// default file is not an error: pure telemetry). Then applies DMASHIM_<SECTION>_<KEY> overrides.
// With `secure` (AT_SECURE: setuid/setgid), the environment is ignored entirely: only the default
// file, and only if it is owned by root and not writable by others.
Config LoadConfig(const Environment& env, bool secure);

inline constexpr const char kDefaultConfigPath[] = "/etc/dmashim/dmashim.toml";
// LoadConfig with another default file, for tests.
Config LoadConfigFrom(const Environment& env, bool secure, const std::string& default_path);

}  // namespace dmashim
