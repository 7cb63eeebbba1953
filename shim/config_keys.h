// The ONE table of configuration keys (DESIGN §6, STYLE "mimalloc"): every key the shim reads, its
// section, type, default and a one-line doc. The TOML parser, the DMASHIM_<SECTION>_<KEY>
// environment overrides and the README's option table (dmashim-config-doc) are all driven by it,
// so adding a key here is the first step and the README test says when the docs lag behind.
#pragma once

#include <cstddef>
#include <string>

namespace dmashim {

enum class KeySection {
  kTop,        // top-level keys of the file
  kIntercept,  // [intercept]
  kPool,       // [pool.NAME], one table per pool
};

// How a value is written; decides the accepted TOML type, the env-var syntax and the "expected" text.
enum class KeyType {
  kBool,      // true / false (env: 1/0, true/false, yes/no, on/off)
  kCount,     // non-negative integer
  kString,    // any string
  kPath,      // absolute path, or "" for the built-in default
  kGlob,      // non-empty glob pattern
  kSize,      // "64KiB" / "2MiB" / "1GiB" or an integer number of bytes
  kDuration,  // Abseil duration: "50ms", "2s", "1.5s"
  kMode,      // "block" | "fail-fast" | "timeout:<duration>"
  kZero,      // "eager" | "background" | "none"
  kPrefault,  // "first-use" | "startup"
  kCall,      // "mmap" | "shm" | "mlock" | "cuda" | "ibverbs"
  kShare,     // "private" | "shared" | "any"
  kMatch,     // table of match.* keys
};

// One identifier per key, so config.cc can assign each key's value with a switch.
enum class KeyId {
  kStrict,
  kStats,
  kRunDir,
  kCountPassthrough,
  kBiasedLocks,
  kDefaultMode,
  kInterceptMmap,
  kInterceptShm,
  kInterceptMlock,
  kInterceptCuda,
  kInterceptIbverbs,
  kMatch,
  kMatchCall,
  kMatchHugetlb,
  kMatchSize,
  kMatchShare,
  kMatchCaller,
  kReserve,
  kKeep,
  kMax,
  kMode,
  kInterruptible,
  kZero,
  kPrefault,
  kRetryInterval,
  kRetryMax,
  kWatchdog,
  kCount,  // number of keys, not a key
};

struct ConfigKey {
  KeyId id;
  KeySection section;
  const char* name;  // within the section; "match.call" is the `call` field of a pool's match table
  KeyType type;
  const char* default_text;  // as a user would write it; "" where the default is "unset"
  const char* doc;
};

// Order here is the order of the README table.
inline constexpr ConfigKey kConfigKeys[] = {
    {KeyId::kStrict, KeySection::kTop, "strict", KeyType::kBool, "false",
     "A configuration error, or a `prefault = \"startup\"` reserve that cannot be had, exits the "
     "process instead of falling back to pass-through"},
    {KeyId::kStats, KeySection::kTop, "stats", KeyType::kBool, "true",
     "Write the per-process stats segment that dmashim-exporter reads"},
    {KeyId::kRunDir, KeySection::kTop, "run_dir", KeyType::kPath, "\"\"",
     "Directory of the stats segments; empty: /run/dmashim for root, else "
     "$XDG_RUNTIME_DIR/dmashim"},
    {KeyId::kCountPassthrough, KeySection::kTop, "count_passthrough", KeyType::kBool, "false",
     "Also count the calls that are not ours (plain mmap and the like)"},
    {KeyId::kBiasedLocks, KeySection::kTop, "biased_locks", KeyType::kBool, "true",
     "A thread that keeps taking a pool takes its lock without atomic instructions, and another "
     "thread revokes that with membarrier(2) (never under a seccomp filter). false: plain locks, no "
     "membarrier call"},
    {KeyId::kDefaultMode, KeySection::kTop, "default_mode", KeyType::kMode, "\"fail-fast\"",
     "Mode of guarded pass-through calls that no pool matches; fail-fast is the kernel's own "
     "behaviour"},
    {KeyId::kInterceptMmap, KeySection::kIntercept, "mmap", KeyType::kBool, "true",
     "Interpose mmap/munmap/mremap/madvise/mprotect (huge-page mappings)"},
    {KeyId::kInterceptShm, KeySection::kIntercept, "shm", KeyType::kBool, "true",
     "Interpose shmget/shmat/shmdt/shmctl (SysV SHM_HUGETLB)"},
    {KeyId::kInterceptMlock, KeySection::kIntercept, "mlock", KeyType::kBool, "true",
     "Interpose mlock/mlock2/munlock/mlockall/munlockall"},
    {KeyId::kInterceptCuda, KeySection::kIntercept, "cuda", KeyType::kBool, "true",
     "Interpose cudaHostAlloc/cudaMallocHost/cudaFreeHost/cudaHostRegister where libcudart is "
     "loaded"},
    {KeyId::kInterceptIbverbs, KeySection::kIntercept, "ibverbs", KeyType::kBool, "true",
     "Interpose ibv_reg_mr/ibv_dereg_mr where libibverbs is loaded"},
    {KeyId::kMatch, KeySection::kPool, "match", KeyType::kMatch, "{}",
     "Which calls the pool serves (inline table of the match.* keys below); unset fields match "
     "anything"},
    {KeyId::kMatchCall, KeySection::kPool, "match.call", KeyType::kCall, "\"mmap\"",
     "Call family; mlock/cuda/ibverbs pools take pinned 4 KiB pages"},
    {KeyId::kMatchHugetlb, KeySection::kPool, "match.hugetlb", KeyType::kBool, "",
     "mmap/shm only: MAP_HUGETLB / SHM_HUGETLB or a hugetlbfs fd; must not be false"},
    {KeyId::kMatchSize, KeySection::kPool, "match.size", KeyType::kSize, "",
     "Element size, a multiple of the page size; unset: one page (2MiB huge, 1GiB with size = "
     "\"1GiB\", 4KiB pinned)"},
    {KeyId::kMatchShare, KeySection::kPool, "match.share", KeyType::kShare, "\"any\"",
     "MAP_PRIVATE or MAP_SHARED requests only"},
    {KeyId::kMatchCaller, KeySection::kPool, "match.caller", KeyType::kGlob, "",
     "Glob on the calling shared object's path or basename, e.g. \"librte_*.so\""},
    {KeyId::kReserve, KeySection::kPool, "reserve", KeyType::kCount, "0",
     "Elements held back (the kernel's min_nr): the guarantee"},
    {KeyId::kKeep, KeySection::kPool, "keep", KeyType::kCount, "max(reserve, 8)",
     "Freed elements kept on the free list before going back to the kernel"},
    {KeyId::kMax, KeySection::kPool, "max", KeyType::kCount, "0",
     "Cap on elements in use; 0 = none. reserve and keep must not exceed it"},
    {KeyId::kMode, KeySection::kPool, "mode", KeyType::kMode, "\"fail-fast\"",
     "On a miss: wait until memory comes back, wait up to a duration, or fail with ENOMEM at once"},
    {KeyId::kInterruptible, KeySection::kPool, "interruptible", KeyType::kBool, "false",
     "A signal ends a wait with EINTR"},
    {KeyId::kZero, KeySection::kPool, "zero", KeyType::kZero, "\"background\"",
     "How recycled elements are zeroed: \"eager\" at free, \"background\" ahead of reuse on the "
     "maintenance thread (both share a 2 MiB zeroing between two cores); \"none\" hands out "
     "previous contents"},
    {KeyId::kPrefault, KeySection::kPool, "prefault", KeyType::kPrefault, "\"first-use\"",
     "When the reserve is allocated and faulted in"},
    {KeyId::kRetryInterval, KeySection::kPool, "retry_interval", KeyType::kDuration, "\"50ms\"",
     "First interval between source retries while waiting (memory freed by other processes sends "
     "no wake-up)"},
    {KeyId::kRetryMax, KeySection::kPool, "retry_max", KeyType::kDuration, "\"1s\"",
     "The retry interval backs off up to this"},
    {KeyId::kWatchdog, KeySection::kPool, "watchdog", KeyType::kDuration, "\"10s\"",
     "A wait longer than this prints one warning line with the waiting call site"},
};

inline constexpr size_t kNumConfigKeys = sizeof(kConfigKeys) / sizeof(kConfigKeys[0]);
static_assert(kNumConfigKeys == static_cast<size_t>(KeyId::kCount),
              "every KeyId has exactly one row in kConfigKeys");

// DMASHIM_* variables that are not configuration keys, so an override check does not flag them.
inline constexpr const char* kNonKeyVariables[] = {
    "DMASHIM_CONFIG",    // the file itself
    "DMASHIM_SESSION",   // set by `dmashim run` so its summary finds every process it started
    "DMASHIM_LIBRARY"};  // where `dmashim run` finds libdmashim.so

// The row of a key; rows are in KeyId order (checked by a test).
inline const ConfigKey& KeyInfo(KeyId id) { return kConfigKeys[static_cast<size_t>(id)]; }

// What a value of `type` looks like, for "expected …" messages and the README: e.g.
// `"block", "fail-fast" or "timeout:<duration>"`.
const char* KeyTypeText(KeyType type);

// "strict", "intercept.mmap", "pool.NAME.reserve" (with `pool` as NAME when given).
std::string KeyPath(const ConfigKey& key, const std::string& pool = "NAME");

// The environment spelling of a name: uppercase, with '-' and '.' as '_' ("rx-buffers" → RX_BUFFERS).
std::string EnvWord(const std::string& name);

// DMASHIM_STRICT, DMASHIM_INTERCEPT_MMAP, DMASHIM_POOL_<NAME>_MATCH_SIZE (pool uppercased, '-'→'_').
std::string KeyEnvName(const ConfigKey& key, const std::string& pool = "<NAME>");

// The key table as a Markdown table (key, environment variable, type, default, description): the
// README's option list between <!-- config-keys:begin --> and <!-- config-keys:end -->.
std::string RenderKeyTableMarkdown();

}  // namespace dmashim
