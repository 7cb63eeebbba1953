// libFuzzer target: the stats-segment reader and what consumes its snapshots (DESIGN §9, issue 7
// item 6). A segment lives in a directory other processes write to, so every byte is hostile.
//
// Input layout (first byte = mode):
//   mode & 3 == 0  the rest of the input is the file, byte for byte (short files, odd sizes);
//   mode & 3 == 1  start from a valid segment written by the real writer (StatsSegment) and apply
//                  patches: repeated [offset: 4 bytes LE, taken modulo the file size][n: 1 byte]
//                  [n bytes]. Mode bit 2 appends a byte, bit 3 drops the last 8 (size checks);
//   mode & 3 == 2  the rest is a /proc/<pid>/stat line for ParseStartTime.
//   mode & 3 == 3  as 1.
// Every input is also read the exporter's way (ReadOptions without sites). Mode bit 4 also runs
// the exporter's collector and both its sinks over the directory, and
// `dmashim stat`'s table is always rendered from an accepted snapshot.
//
// Invariants checked on every accepted snapshot: counts within the layout's capacities, names
// terminated within their fields, every site naming an existing pool.
#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "exporter/collector.h"
#include "exporter/metric_sink.h"
#include "exporter/segment_reader.h"
#include "exporter/summary.h"
#include "shim/stats_segment.h"

namespace {

std::string g_dir;
int g_dirfd = -1;
std::string g_template;
constexpr char kName[] = "1.1.seg";

[[noreturn]] void Fail(const char* what) {
  fprintf(stderr, "fuzz_segment: accepted snapshot breaks an invariant: %s\n", what);
  abort();
}

// A valid segment written by the real writer, with two pools and a call site, as bytes.
std::string MakeTemplate() {
  char tmpl[] = "/dev/shm/dmashim-fuzz-tmpl-XXXXXX";
  if (mkdtemp(tmpl) == nullptr) abort();
  dmashim::StatsSegment seg;
  if (dmashim::StatsSegment::Create(tmpl, &seg) != 0) abort();
  dmashim::PoolStats* a = seg.AddPool("rx", dmashim::PoolKind::kMempool, 1, 2 << 20);
  dmashim::PoolStats* b = seg.AddPool("blocks", dmashim::PoolKind::kDmaPool, 3, 64);
  a->alloc_source = 3;
  a->wait_count = 1;
  a->wait_sum_ns = 5000;
  b->fail_fast = 2;
  const uintptr_t pcs[] = {0x401000, 0x402000};
  seg.RecordSite(0, pcs, 2, 5000, false);
  std::string bytes(sizeof(dmashim::SegmentFile), '\0');
  memcpy(bytes.data(), seg.file(), bytes.size());
  const std::string path = seg.path();
  seg.Close();
  unlink(path.c_str());
  rmdir(tmpl);
  return bytes;
}

void WriteFile(const std::string& bytes) {
  int fd = openat(g_dirfd, kName, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) abort();
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n = write(fd, bytes.data() + done, bytes.size() - done);
    if (n <= 0) abort();
    done += static_cast<size_t>(n);
  }
  close(fd);
}

void Check(const dmashim::Snapshot& s) {
  if (s.pools.size() > dmashim::kSegmentPoolCapacity) Fail("pool count");
  for (const dmashim::PoolStats* p : s.pools) {
    if (strnlen(p->name, dmashim::kPoolNameMax) >= dmashim::kPoolNameMax) Fail("pool name");
    if (p->name[0] == '\0') Fail("empty pool name");
  }
  for (const dmashim::SiteSnapshot& site : s.sites) {
    if (site.pool_index >= s.pools.size()) Fail("site pool index");
    if (site.pcs.size() > dmashim::kSiteMaxPcs) Fail("site pcs");
  }
  if (s.comm.size() > dmashim::kSegmentCommMax || s.exe.size() > dmashim::kSegmentExeMax ||
      s.cmdline.size() > dmashim::kSegmentCmdlineMax)
    Fail("string length");
  if (s.pid <= 0) Fail("pid");
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  char tmpl[] = "/dev/shm/dmashim-fuzz-XXXXXX";
  if (mkdtemp(tmpl) == nullptr) abort();
  g_dir = tmpl;
  g_dirfd = open(tmpl, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (g_dirfd < 0) abort();
  g_template = MakeTemplate();
  // The directory goes when the fuzzer exits, however it exits normally.
  atexit([] {
    unlinkat(g_dirfd, kName, 0);
    rmdir(g_dir.c_str());
  });
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const uint8_t mode = data[0];
  const absl::string_view rest(reinterpret_cast<const char*>(data + 1), size - 1);

  if ((mode & 3) == 2) {
    (void)dmashim::ParseStartTime(rest);
    return 0;
  }
  std::string bytes;
  if ((mode & 3) == 0) {
    bytes.assign(rest.data(), rest.size());
  } else {
    bytes = g_template;
    size_t i = 0;
    while (i + 5 <= rest.size()) {
      uint32_t off;
      memcpy(&off, rest.data() + i, 4);
      const size_t n = static_cast<uint8_t>(rest[i + 4]);
      i += 5;
      const size_t avail = std::min(n, rest.size() - i);
      const size_t at = off % bytes.size();
      const size_t len = std::min(avail, bytes.size() - at);
      memcpy(bytes.data() + at, rest.data() + i, len);
      i += avail;
    }
    if (mode & 4) bytes.push_back('x');
    if (mode & 8) bytes.resize(bytes.size() - 8);
  }
  WriteFile(bytes);

  // The exporter's way (no call sites, only the pools in use, into a reused buffer) accepts
  // exactly what the full read accepts.
  static std::shared_ptr<dmashim::SegmentFile> buffer;
  auto lean = dmashim::ReadSegment(g_dirfd, kName, geteuid(),
                                   {.sites = false, .reuse = std::move(buffer)});
  if (lean.ok()) {
    Check(*lean);
    buffer = std::move(lean->data);
  }
  auto snap = dmashim::ReadSegment(g_dirfd, kName, geteuid());
  if (snap.ok() != lean.ok()) Fail("lean and full reads disagree");
  if (snap.ok()) {
    Check(*snap);
    std::vector<dmashim::Snapshot> all;
    all.push_back(*std::move(snap));
    (void)dmashim::FormatSummary(all);
  } else {
    // Every refusal names its reason (the exporter's `reason` label).
    const std::string reason = dmashim::ErrorReason(snap.status());
    if (reason.empty() || reason.find(' ') != std::string::npos) Fail("error reason");
  }
  if (mode & 16) {
    dmashim::CollectorOptions o;
    o.run_dir = g_dir;
    o.reader_euid = geteuid();
    dmashim::SegmentCollector collector(o);
    (void)dmashim::SerializeText(collector.Collect());
    dmashim::TextSink text;
    collector.ScrapeText(text);
    WriteFile(bytes);  // the collector may have reaped it
  }
  return 0;
}
