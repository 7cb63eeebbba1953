// The stats segment: the one file per process through which the shim (the only writer) tells the
// exporter and the dmashim command (readers) what its pools did. This header is the whole ABI;
// both sides include it and nothing else describes the layout.
//
// Contract of the layout:
//  - fixed size (sizeof(SegmentFile)), no pointers, only lock-free atomics and plain bytes that
//    are written once before they are published, so the file can be mapped MAP_SHARED by the
//    writer and read() by anyone at any time;
//  - a reader accepts a file only when magic, version and every recorded size match its own
//    build exactly; bump kSegmentVersion whenever anything below is added, removed or moved
//    (PoolStats has its own kPoolStatsVersion, recorded in the header as well);
//  - readers treat the file as untrusted input (see exporter/segment_reader.h).
//
// The writer (StatsSegment, below) makes every system call through syscall(2), takes no locks,
// allocates nothing and throws nothing, because it runs inside the LD_PRELOAD shim that intercepts
// mmap, open and ftruncate.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <type_traits>

#include "absl/functional/function_ref.h"
#include "pools/stats.h"

namespace dmashim {

inline constexpr uint64_t kSegmentMagic = 0x31474553'4d48534dULL;  // "MSHMSEG1", little-endian
inline constexpr uint32_t kSegmentVersion = 2;
inline constexpr uint32_t kSegmentPoolCapacity = 32;
inline constexpr uint32_t kSegmentSiteCapacity = 256;
inline constexpr uint32_t kSiteMaxPcs = 8;
inline constexpr size_t kSegmentCommMax = 16;  // TASK_COMM_LEN
inline constexpr size_t kSegmentExeMax = 256;  // a prefix of the path: enough to recognise it
inline constexpr size_t kSegmentCmdlineMax = 256;
inline constexpr size_t kSegmentSessionMax = 32;

// Calls the shim passes straight to the kernel, counted by name. Append only (new entries before
// kCount); the names below are the `call` label values.
enum class PassCall : uint32_t {
  kMmap, kMunmap, kMremap, kMadvise, kMprotect, kMlock, kMunlock, kMlockall, kMunlockall,
  kShmget, kShmat, kShmdt, kShmctl, kMemfdCreate, kOpen, kFtruncate, kFallocate,
  kCount
};
inline constexpr const char* kPassCallNames[] = {
    "mmap",   "munmap", "mremap", "madvise", "mprotect",     "mlock", "munlock",   "mlockall",
    "munlockall", "shmget", "shmat", "shmdt", "shmctl", "memfd_create", "open", "ftruncate",
    "fallocate"};
static_assert(std::size(kPassCallNames) == static_cast<size_t>(PassCall::kCount));
// Room in the file: more calls can be added without moving anything after the array.
inline constexpr size_t kPassCallSlots = 32;

// Interposition families and whether their hooks were seen to fire (DESIGN §2, self-check).
enum class HookFamily : uint32_t { kMmap, kShm, kMlock, kCuda, kIbverbs, kCount };
inline constexpr const char* kHookFamilyNames[] = {"mmap", "shm", "mlock", "cuda", "ibverbs"};
static_assert(std::size(kHookFamilyNames) == static_cast<size_t>(HookFamily::kCount));
inline constexpr size_t kHookSlots = 8;
enum class HookState : uint32_t { kUnknown = 0, kFiring = 1, kNotFiring = 2 };

struct SegmentHeader {
  uint64_t magic;               // kSegmentMagic, stored last (release) when the file is created
  uint32_t version;             // kSegmentVersion
  uint32_t header_size;         // sizeof(SegmentHeader)
  uint32_t pool_stats_size;     // sizeof(PoolStats)
  uint32_t pool_stats_version;  // kPoolStatsVersion
  uint32_t pool_capacity;       // kSegmentPoolCapacity
  uint32_t site_capacity;       // kSegmentSiteCapacity
  uint32_t site_size;           // sizeof(CallSite)
  uint32_t reserved;
  uint64_t file_size;  // sizeof(SegmentFile)
};

struct SegmentProcess {
  int32_t pid;
  uint32_t uid;                // effective uid of the writer = the file's owner (readers check)
  uint64_t start_time_ticks;   // /proc/<pid>/stat field 22: a reused pid has another start time
  uint64_t created_unix_ns;    // CLOCK_REALTIME when the segment was created
  char comm[kSegmentCommMax];  // NUL-terminated by the writer; readers terminate it anyway
  char exe[kSegmentExeMax];
  char cmdline[kSegmentCmdlineMax];  // arguments separated by spaces, truncated
  // DMASHIM_SESSION of the process (set by `dmashim run` for everything it starts, so its summary
  // finds forked and exec'd descendants too); empty when unset or in a setuid program.
  char session[kSegmentSessionMax];
  std::atomic<uint32_t> exited;      // 1 once MarkExited() ran (normal exit); a crash leaves 0
  uint32_t reserved;
  std::atomic<uint64_t> exit_unix_ns;  // written before `exited`
};

// Process-level counters.
struct SegmentCounters {
  Counter passthrough[kPassCallSlots];     // indexed by PassCall
  Counter config_errors;                   // configuration errors reported at start-up
  Counter sites_dropped;                   // RecordSite calls that found the table full
  std::atomic<uint32_t> hooks[kHookSlots];  // HookState, indexed by HookFamily
};

// One call site that waited or failed: the program counters of the slow path's caller, hashed.
// A slot is free while `hash` is 0; a writer claims it with a CAS on `hash`, fills pool and pcs,
// then sets `ready` (release). Readers skip slots that are not ready.
struct alignas(64) CallSite {
  std::atomic<uint64_t> hash;
  std::atomic<uint32_t> ready;
  uint32_t pool_index;
  uint32_t npcs;  // ≤ kSiteMaxPcs
  uint32_t reserved;
  uint64_t pcs[kSiteMaxPcs];
  Counter count;    // slow-path events at this site
  Counter wait_ns;  // total time waited there
  Counter failures;
};

enum class ControlCommand : uint32_t { kNone = 0, kResize = 1 };

// `dmashim ctl PID resize POOL N`: the requester (the process's owner or root) claims `requester`
// with a CAS (0 → its pid), writes command, pool and value, then bumps request_seq (release). The
// shim's maintenance thread sees request_seq != response_seq, applies it, writes status and
// result_reserve, then stores response_seq = request_seq (release). The requester waits for that,
// then stores requester = 0.
struct SegmentControl {
  std::atomic<uint32_t> requester;
  uint32_t command;  // ControlCommand
  char pool[kPoolNameMax];
  std::atomic<int64_t> value;
  std::atomic<uint64_t> request_seq;
  std::atomic<uint64_t> response_seq;
  std::atomic<int32_t> status;  // 0 done; an errno otherwise (ENOENT: no such pool, EAGAIN: partial)
  uint32_t reserved;
  std::atomic<int64_t> result_reserve;  // the reserve after the request (a grow may be partial)
};

struct SegmentFile {
  SegmentHeader header;
  SegmentProcess process;
  SegmentCounters counters;
  SegmentControl control;
  std::atomic<uint32_t> pool_count;  // pools[0, pool_count) are initialised (release)
  uint32_t reserved;
  PoolStats pools[kSegmentPoolCapacity];
  CallSite sites[kSegmentSiteCapacity];
};

static_assert(std::is_standard_layout_v<SegmentFile>);
static_assert(std::atomic<uint32_t>::is_always_lock_free);
static_assert(std::atomic<int64_t>::is_always_lock_free);
static_assert(offsetof(SegmentFile, header) == 0);
static_assert(sizeof(SegmentFile) % 64 == 0);
static_assert(sizeof(SegmentFile) <= 256 * 1024, "segment must stay small (DESIGN §8)");

// What PollControl's callback reports back to the requester.
struct ControlResult {
  int status = 0;              // 0, or an errno
  int64_t result_reserve = 0;  // the pool's reserve afterwards
};

// The writer. One per process, owned by the shim. Not copyable; trivially destructible (the
// mapping lives as long as the process: the file must outlive even a crash).
class StatsSegment {
 public:
  StatsSegment() = default;
  StatsSegment(const StatsSegment&) = delete;
  StatsSegment& operator=(const StatsSegment&) = delete;

  // Creates `<run_dir>/<pid>.<starttime>.seg` and maps it. `run_dir` is DMASHIM_RUN_DIR or the
  // config's run_dir; null or empty selects /run/dmashim for root, else
  // $XDG_RUNTIME_DIR/dmashim (secure_getenv: nothing from the environment for setuid programs).
  // The last path component is created 0700 when missing; a run dir that is a symlink or not
  // owned by our effective uid is refused (EPERM / ELOOP). The file is created O_EXCL, mode 0600,
  // under a hidden temporary name and renamed into place once its header is complete, so readers
  // never see a half-written one. If a segment for this pid and start time already exists (the
  // process exec'd), the old one is marked exited and renamed aside so it is reaped.
  // Returns 0, or the errno of the step that failed (ENOENT: no run dir could be determined).
  // Does not block; safe inside interposed calls (raw syscalls only, no allocation).
  static int Create(const char* run_dir, StatsSegment* out);

  // In a child after fork(): gives the child its own file (its pid and start time) and maps it at
  // the same address, so every PoolStats* handed out stays valid and now counts for the child.
  // Pool identities and gauges are copied; counters, histograms, waits, call sites and control
  // state start from zero. Returns 0 or an errno (the child then keeps writing to memory that is
  // no longer shared with anyone: still safe, just invisible).
  int CreateForChild();

  bool valid() const { return file_ != nullptr; }
  const char* path() const { return path_; }
  SegmentFile* file() { return file_; }

  // Registers a pool; returns its record (initialised with InitPoolStats) or nullptr when the
  // segment is invalid or all kSegmentPoolCapacity slots are taken. Thread-safe, lock-free.
  PoolStats* AddPool(const char* name, PoolKind kind, uint32_t mode, uint64_t element_size);
  // Index of a record returned by AddPool (for RecordSite), or -1.
  int PoolIndex(const PoolStats* stats) const;

  // Process counters. Relaxed atomics, callable from any thread; no-ops on an invalid segment.
  void CountPassthrough(PassCall call) {
    if (file_) file_->counters.passthrough[static_cast<size_t>(call)].fetch_add(1, std::memory_order_relaxed);
  }
  void AddConfigErrors(uint64_t n) {
    if (file_) file_->counters.config_errors.fetch_add(n, std::memory_order_relaxed);
  }
  void SetHookState(HookFamily family, HookState state) {
    if (file_) file_->counters.hooks[static_cast<size_t>(family)].store(static_cast<uint32_t>(state), std::memory_order_relaxed);
  }

  // Records one slow-path event (a wait of `wait_ns`, or a failure) at the call site `pcs[0..n)`
  // of pool `pool_index`. Lock-free; call it outside any pool lock. When the table is full the
  // event only counts in sites_dropped.
  void RecordSite(int pool_index, const uintptr_t* pcs, int n, uint64_t wait_ns, bool failed);

  // Applies at most one pending control request: calls `apply(command, pool, value)` and
  // publishes its result. Returns true when a request was handled. Call from the maintenance
  // thread only (one poller).
  bool PollControl(
      absl::FunctionRef<ControlResult(ControlCommand command, const char* pool, int64_t value)> apply);

  // Records a normal exit (exit time, then the flag). Call from the shim's exit path.
  void MarkExited();

  // Unmaps the segment (tests). The file stays.
  void Close();

 private:
  int MapNew(const char* dir, bool at_fixed_address);

  SegmentFile* file_ = nullptr;
  std::atomic<uint32_t> claimed_pools_{0};
  char dir_[256] = {};
  char path_[320] = {};
};

// The hash RecordSite files a site under (never 0). Exposed for tests and readers.
uint64_t CallSiteHash(int pool_index, const uintptr_t* pcs, int n);

}  // namespace dmashim
