// Reading a stats segment (shim/stats_segment.h) as untrusted input. A segment sits in a directory
// other processes write to; it may be truncated, corrupted, replaced, a symlink, a FIFO, owned by
// another user, or still being written. ReadSegment never trusts it: it opens without following
// links or blocking, checks the file's type, size and owner, copies the bytes with read() (a
// mapping could shrink under us and SIGBUS), and validates every size, count and string before
// anything uses them.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "shim/stats_segment.h"

namespace dmashim {

// One valid call site, copied out of the segment.
struct SiteSnapshot {
  uint32_t pool_index;  // < Snapshot::pools.size()
  std::vector<uint64_t> pcs;
  uint64_t count;
  uint64_t wait_ns;
  uint64_t failures;
};

// A private, validated copy of one segment at one moment.
struct Snapshot {
  std::string file_name;  // within the run directory
  uid_t file_uid = 0;     // owner of the file
  // Process identity; strings are NUL-terminated copies, not necessarily valid UTF-8.
  int32_t pid = 0;
  uint32_t uid = 0;
  uint64_t start_time_ticks = 0;
  std::string comm;
  std::string exe;
  std::string cmdline;
  std::string session;  // DMASHIM_SESSION, set by `dmashim run`
  bool exited = false;
  uint64_t exit_unix_ns = 0;
  uint64_t passthrough[static_cast<size_t>(PassCall::kCount)] = {};
  uint64_t config_errors = 0;
  uint64_t sites_dropped = 0;
  HookState hooks[static_cast<size_t>(HookFamily::kCount)] = {};
  // pools[i] points into `data` (ours alone: reads of its atomics race with nobody). Names are
  // NUL-terminated in the copy.
  std::vector<const PoolStats*> pools;
  std::vector<SiteSnapshot> sites;
  std::shared_ptr<SegmentFile> data;
};

// Why a segment was refused: the first word of the status message, used as the `reason` label of
// dmashim_exporter_segment_errors_total. Stable strings.
namespace segment_error {
inline constexpr char kOpen[] = "open_failed";       // could not open (vanished, EACCES, …)
inline constexpr char kSymlink[] = "symlink";        // a symbolic link in the run directory
inline constexpr char kNotRegular[] = "not_regular";  // directory, FIFO, device, socket
inline constexpr char kForeignOwner[] = "foreign_owner";  // owned by another user (reader not root)
inline constexpr char kTruncated[] = "truncated";    // shorter than a segment
inline constexpr char kTooLarge[] = "too_large";     // longer than a segment
inline constexpr char kRead[] = "read_failed";
inline constexpr char kBadMagic[] = "bad_magic";
inline constexpr char kBadVersion[] = "bad_version";
inline constexpr char kBadLayout[] = "bad_layout";   // header sizes/capacities not ours
inline constexpr char kBadPoolCount[] = "bad_pool_count";
inline constexpr char kBadPool[] = "bad_pool";       // a pool record that cannot be right
inline constexpr char kUidMismatch[] = "uid_mismatch";  // the writer's uid is not the file's owner
}  // namespace segment_error

// What ReadSegment copies besides the header, the process and its pools.
struct ReadOptions {
  // The call-site table (two thirds of the file). Without it Snapshot::sites stays empty, only
  // the pool records in use are read, and the rest of Snapshot::data is not the file's: the
  // exporter's scrape needs no more.
  bool sites = true;
  // Storage to read into when nobody else holds it (a scrape reads 1,000 segments one after the
  // other into one buffer); a fresh one is allocated otherwise.
  std::shared_ptr<SegmentFile> reuse;
};

// Reads `name` in the directory `dirfd`. `reader_euid` is the caller's effective uid: unless it is
// 0, a file owned by another uid is refused. Never blocks on the file (O_NONBLOCK: a FIFO named
// *.seg does not hang a scrape). Errors: absl::InvalidArgumentError (the file itself is bad) or
// absl::UnavailableError (it could not be opened or read) whose message starts with one of the
// segment_error reasons followed by ": ".
absl::StatusOr<Snapshot> ReadSegment(int dirfd, const std::string& name, uid_t reader_euid,
                                     ReadOptions options = {});

// The reason word of a ReadSegment error ("open_failed" when the status carries none).
std::string ErrorReason(const absl::Status& status);

// Whether the process that wrote `s` still runs: the pid exists and its start time (field 22 of
// /proc/<pid>/stat) is the recorded one, so a reused pid reads as dead. `proc_root` is "/proc"
// except in tests.
bool ProcessAlive(int32_t pid, uint64_t start_time_ticks, absl::string_view proc_root = "/proc");

// Field 22 of a /proc/<pid>/stat line, or 0 when it cannot be parsed.
uint64_t ParseStartTime(absl::string_view stat_line);

}  // namespace dmashim
