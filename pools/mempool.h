// Mempool: a pool of fixed-size elements with a reserve, after the kernel's mm/mempool.c.
//
// A pool holds at least `reserve` elements (free or in use) once filled, so with the reserve sized
// to the concurrent demand an allocation in `block` mode always completes, even while the source
// (the kernel's huge pages or lock budget) is exhausted. How an allocation that finds nothing
// behaves is the pool's explicit wait policy: block, block with a timeout, or fail fast.
//
// Order on allocate: the pool's own free elements (no system call) → the source, without waiting →
// then, by mode, wait in rounds: woken at once by a free into this pool, retrying the source every
// retry_interval (backing off to retry_max) since memory freed by other processes sends no wake-up.
// Order on free: back on the free list while fewer than `keep` elements are free, a thread is
// waiting, or the pool would drop below `reserve`; otherwise back to the source.
#pragma once

#include <errno.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "pools/lock.h"
#include "absl/time/time.h"
#include "pools/page_source.h"
#include "pools/policy.h"
#include "pools/stats.h"

namespace dmashim {

class Mempool;

// Slow paths of an allocation, reported to an optional observer (the shim captures call sites and
// runs its watchdog with it). Never reported for a pool hit.
enum class SlowPath : uint32_t {
  kWaitBegin = 1,   // about to wait (ns = 0)
  kWaitEnd = 2,     // a wait ended (ns = time waited; err = 0 on success, else the errno returned)
  kFailure = 3,     // failed without waiting (fail-fast, or a source error); err = the errno
  kSlowSource = 4,  // the source took longer than slow_source_ns (ns = its time)
};
// Called on the allocating thread, outside every pool lock, so it may unwind the stack or take
// locks of its own. Must not call back into the same pool.
using SlowPathObserver = void (*)(void* ctx, const Mempool& pool, SlowPath what, uint64_t ns,
                                  int err);

// Errors that mean "not now": waiting for memory to come back can fix them (huge pages taken,
// a lock budget used up, hugetlbfs out of space). Any other error fails at once.
inline bool IsShortageErrno(int e) {
  return e == ENOMEM || e == EAGAIN || e == ENOSPC || e == EPERM;
}

struct MempoolOptions {
  std::string name;                 // at most kPoolNameMax - 1 bytes
  SourceSpec source;                // where elements come from
  size_t element_size = 0;          // 0: the source's page size; else a multiple of it
  size_t reserve = 0;               // min_nr: elements the pool never drops below once filled
  size_t max = 0;                   // cap on elements in use; 0 = no cap
  std::optional<size_t> keep;       // free elements kept; default max(reserve, 8)
  WaitPolicy policy;                // the pool's default wait policy
  ZeroMode zero = ZeroMode::kEager;
  absl::Duration retry_interval = absl::Milliseconds(50);  // first source retry while waiting
  absl::Duration retry_max = absl::Seconds(1);             // backoff ceiling
  bool record_stats = true;  // false (`stats = false`): the hit and free paths skip the stats record
  // The pool lock may be biased to the thread that keeps taking it (BiasedLock): false keeps it a
  // plain futex lock, and the process makes no membarrier(2) call for this pool.
  bool biased_lock = true;
  SlowPathObserver observer = nullptr;
  void* observer_ctx = nullptr;
  uint64_t slow_source_ns = 10'000'000;  // a source call above this is reported as kSlowSource
};

struct RangeReleased {
  size_t forgotten = 0;  // regions in use the range overlapped, no longer tracked
  size_t evicted = 0;    // free elements it overlapped, returned to the kernel
};

struct ResizeResult {
  size_t target = 0;  // the new reserve
  size_t held = 0;    // elements the pool holds now; < target when a grow was partial
  int err = 0;        // the source's errno that stopped a partial grow, else 0
};

class Mempool {
 public:
  // Validates the options; maps nothing (the reserve is filled by Prefill() or the first Alloc()).
  // `stats` may point into shared memory and must outlive the pool; null = a record of its own.
  // Fails with InvalidArgument naming the bad option.
  static absl::StatusOr<std::unique_ptr<Mempool>> Create(MempoolOptions options,
                                                          PoolStats* stats = nullptr,
                                                          const SysCalls* sys = &RealSysCalls());
  // Returns free elements to the kernel. Elements still in use are left mapped (the caller may
  // still be using them) and forgotten.
  ~Mempool();

  Mempool(const Mempool&) = delete;
  Mempool& operator=(const Mempool&) = delete;

  // Maps and faults in elements until the pool holds `reserve`. Blocks only for the source calls
  // (≈ 140 µs per 2 MiB huge page). Returns the number held; fewer than `reserve` when the source
  // ran out (the shortfall is retried by later frees and the maintenance thread).
  size_t Prefill();

  // Allocates one element for a request of `requested` bytes (≤ element_size; used for the
  // rounding-waste figure). Uses the pool's policy, or `policy` when given.
  //   block:        may block without bound; fails only for a source error waiting cannot fix.
  //   timeout:<d>:  blocks at most d, then fails with ENOMEM (counted as `timeout`).
  //   fail-fast:    never blocks on other threads; fails with ENOMEM (counted as `fail_fast`).
  // With interruptible, a signal handler run during a wait ends it with EINTR.
  // A source error other than a shortage (ENOMEM, EAGAIN, ENOSPC, EPERM) fails at once with that
  // errno (counted as `source`). Returns nullptr with *err set on failure. The element is zeroed
  // unless zero = none, read-write, and inherited by fork children.
  void* Alloc(size_t requested, int* err);
  void* Alloc(size_t requested, const WaitPolicy& policy, int* err);
  // As above; a wait also ends when `abandon(ctx)` returns true after a wake-up (WakeWaiters()):
  // then nullptr with *err = EALREADY, counted as a wait but not as a failure. A DmaPool waiting for
  // a page uses it to stop waiting when one of its own blocks is freed.
  void* Alloc(size_t requested, const WaitPolicy& policy, int* err, bool (*abandon)(void*),
              void* ctx);

  // Wakes every waiting thread so it re-checks the pool and its abandon condition. Never blocks.
  void WakeWaiters();

  // Counts an allocation served by this pool's reserve outside Alloc (the shim's release-and-retry
  // of a call it could not serve itself). Takes the pool lock briefly.
  void CountServedByReserve();

  // Returns an element from Alloc(). Never blocks on a wait; with zero = eager it zeroes the
  // element first (≈ 100 µs for 2 MiB). Wakes one waiter. Freeing a pointer the pool does not hold
  // in use is ignored and returns false.
  bool Free(void* element);

  // True when `p` is the start of an element this pool holds (free or in use).
  bool Owns(const void* p) const;

  // Regions: elements an interposer (the shim) hands to the application as mmap regions. Their
  // bookkeeping for munmap, mprotect, partial unmaps and fork lives in this pool's element table,
  // so the interposer keeps no table (and takes no lock) of its own on the map and unmap paths.
  //
  // As Alloc(requested, policy, err), and the element is marked as a region.
  void* AllocRegion(size_t requested, const WaitPolicy& policy, int* err);
  // munmap(element, len) of a region: when `element` is a region of this pool in use and `len`,
  // rounded up to the source page as the kernel does, is exactly the element, it goes back as
  // Free() sends it (made read-write first if its protection was changed) and true is returned.
  // Otherwise nothing happens and false is returned (a partial or foreign unmap, or a double
  // unmap). Never blocks on a wait.
  bool FreeRegion(void* element, size_t len);
  // Stops tracking every region in use that overlaps [addr, addr+len) — a partial munmap, mremap,
  // madvise or MAP_FIXED over it: the caller's call takes the memory. Returns how many.
  size_t ForgetRegions(const void* addr, size_t len);
  // ForgetRegions of the range, and every free element overlapping it unmapped so the caller can
  // map there (MAP_FIXED over a pooled-but-free element), in one pass over the elements under one
  // lock acquisition: what an interposer does before the real call on a range it does not own.
  RangeReleased ReleaseRange(const void* addr, size_t len);
  // The application changed the protection of the regions overlapping [addr, addr+len): each is
  // made read-write again when it comes back.
  void MarkProtectionChanged(const void* addr, size_t len);
  // False when `p` cannot be an element of this pool: it lies outside the addresses its source
  // has mapped. Lock-free; lets an unmap skip pools without taking their locks.
  bool MaybeHolds(const void* p) const { return source_.MaybeHolds(p); }

  // The caller took ownership of an in-use element (partial munmap, mremap): the pool stops
  // tracking it and does not unmap it. The reserve is refilled later. Returns false if unknown.
  bool Forget(void* element);
  // Hands up to `count` free elements back to the kernel so a call the pool cannot serve itself can
  // be retried with their pages (release-and-retry). Returns how many were released. The reserve is
  // topped up again by the maintenance thread retry_interval later, and not while a RefillHold is
  // held: the caller holds one across the release and its retry. Taking it waits for the source
  // calls in flight, and a fill under way (Prefill, on any thread) stops while it is held — else a
  // fill still running from start-up, or a retry slower than retry_interval, takes the released
  // pages back before the retry gets them.
  size_t ReleaseFree(size_t count);
  class RefillHold {
   public:
    explicit RefillHold(Mempool* pool);  // pool may be null: holds nothing
    ~RefillHold();
    RefillHold(const RefillHold&) = delete;
    RefillHold& operator=(const RefillHold&) = delete;

   private:
    Mempool* pool_;
  };

  // Sets the reserve at run time, like mempool_resize: a shrink returns surplus free elements to the
  // kernel; a grow maps elements until the new reserve is held or the source fails (partial: the
  // result says how far it got). Blocks for the source calls only.
  ResizeResult Resize(size_t new_reserve);

  // Maintenance-thread work: zero one dirty element, top up a reserve that is short. Returns true
  // if it did something. Never blocks on waiters.
  bool Maintain();

  // fork(2) support, called by the pool registry's pthread_atfork handlers.
  void ForkPrepare();
  void ForkParent();
  void ForkChild();

  // Points the pool at another stats record (e.g. a fork child's new segment), copying the gauges.
  void RebindStats(PoolStats* stats);
  // Turns the hit and free paths' counting on or off at run time (MempoolOptions::record_stats),
  // for benchmarks that compare the two on the same pool. Turned back on, the use gauges are exact
  // again at once; the hits and frees made while off are not counted.
  void SetRecordStats(bool on);

  const std::string& name() const { return options_.name; }
  size_t element_size() const { return options_.element_size; }
  const MempoolOptions& options() const { return options_; }
  const WaitPolicy& policy() const { return options_.policy; }
  const PoolStats& stats() const { return *stats_; }
  PoolStats* mutable_stats() { return stats_; }
  size_t reserve() const;
  size_t keep() const;
  // Free elements that are ready to hand out without zeroing: zeroed (eagerly or by the maintenance
  // thread), or any free element with zero = none. Takes the pool lock briefly, so the zeroing of
  // every element counted here happens-before the caller's next access to it.
  size_t free_zeroed() const;
  // Chunks (64 KiB) of elements zeroed by a thread other than the one that started zeroing them:
  // the maintenance thread helping an allocating or freeing thread, or an allocator finishing an
  // element the maintenance thread had started. For tests and benchmarks.
  uint64_t zero_chunks_shared() const { return chunks_shared_.load(std::memory_order_relaxed); }
  // Whether the pool lock is biased to the calling thread (BiasedLock). For tests.
  bool LockBiasedToCaller() const { return mu_.BiasedToMe(); }

 private:
  // kQueued: freed into the zeroing queue (background zeroing, below) at position `queued_at`.
  enum class State : uint8_t { kFree, kInUse, kZeroing, kQueued };
  struct Element {
    State state = State::kFree;
    bool inherit_applied = true;  // the kernel's default: DOFORK
    bool region = false;          // in use as an interposer's mmap region (AllocRegion)
    bool prot_changed = false;    // a region whose protection the application changed
    uint32_t queued_at = 0;       // kQueued: its position in the zeroing queue
    size_t requested = 0;
  };

  Mempool(MempoolOptions options, PoolStats* stats, const SysCalls* sys);
  // Sets up `s` as this pool's record: identity, derived use gauges, the reserve target.
  void InitRecord(PoolStats* s) const;

  // How an element taken from the free list becomes ready: as it is (clean), zeroed by the taker
  // as the pool's zeroing job (dirty) or alone (another element is the job), or by joining the
  // job already under way on it.
  enum class Ready : uint8_t { kClean, kDirty, kDirtyAlone, kJoined };

  void* AllocImpl(size_t requested, bool region, const WaitPolicy& policy, int* err,
                  bool (*abandon)(void*), void* ctx);
  // AllocImpl past a hit (out of line: the hit's frame stays small).
  __attribute__((noinline)) void* AllocSlow(size_t requested, bool region,
                                            const WaitPolicy& policy, int* err,
                                            bool (*abandon)(void*), void* ctx);
  bool FreeImpl(void* element, bool region);
  RangeReleased ReleaseRangeImpl(const void* addr, size_t len, bool forget, bool evict)
      ABSL_LOCKS_EXCLUDED(mu_);
  // The elements (their start addresses) that overlap [lo, hi): looked up page by page when the
  // range covers fewer pages than the pool has elements, else by a scan of the table.
  std::vector<uintptr_t> OverlappingLocked(uintptr_t lo, uintptr_t hi) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Marks `e` handed out for a request of `requested` bytes. The caller counts the allocation in
  // the same critical section (or publishes the use gauges): see PublishUseLocked.
  void HandOutLocked(Element& e, size_t requested, bool region) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // A free element that needs no zeroing (queued and zeroed, or clean), handed out; else nullptr.
  void* TakeCleanLocked(size_t requested, bool region) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void* TryFreeListLocked(size_t requested, bool region, Ready* how)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Takes a free element if one appeared, else maps a new one (within `max`).
  void* TrySource(size_t requested, bool region, int* err, bool* from_free, Ready* how,
                  bool count_reserve) ABSL_LOCKS_EXCLUDED(mu_);
  // alloc_reserve and frees are written only under mu_, so an unlocked add counts them: a locked
  // add on the hit path would cost a third of its time (SingleWriterAdd).
  static void BumpLocked(Counter& c) { SingleWriterAdd(c, 1); }
  static void UnbumpLocked(Counter& c) { SingleWriterAdd(c, ~uint64_t{0}); }
  void* Wait(size_t requested, bool region, const WaitPolicy& policy, int* err, uint64_t start_ns,
             bool (*abandon)(void*), void* ctx);
  void* Finish(void* p, Ready how);
  bool KeepOnFreeLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void PublishLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The record's use gauges are derived by its readers (kStatsDerivedUse): in_use = use_base +
  // alloc_reserve − frees, reserve_level = elements_total − in_use. A critical section that hands
  // out a free element and counts it in alloc_reserve, or takes one back and counts the free, keeps
  // them true without a store to the record besides the counter — the hit and free paths. Any
  // other change of in_use_ or of those two counters (an element from the source or after a wait,
  // one forgotten, a count without an element, a new record) calls this in the same critical
  // section: it sets use_base from the record's counters.
  void PublishUseLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // After in_use_ or requested_bytes_ moved: the high-water mark and the rounding waste, written
  // only when they change (a hit that asked for a whole element changes neither once warm).
  void TrackUseLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (in_use_ > high_water_) {
      high_water_ = in_use_;
      stats_->high_water.store(static_cast<int64_t>(in_use_), std::memory_order_relaxed);
    }
    const int64_t waste =
        static_cast<int64_t>(in_use_ * options_.element_size) - requested_bytes_;
    if (waste != waste_) {
      waste_ = waste;
      stats_->waste_bytes.store(waste, std::memory_order_relaxed);
    }
  }
  // Wakes one waiter once the pool lock is released: the woken thread's first act is to take the
  // lock, so waking it while still holding the lock would make it sleep again on the mutex.
  struct WakeAfterUnlock {
    WakeSeq* seq = nullptr;
    ~WakeAfterUnlock() {
      if (seq != nullptr) seq->Notify(1);
    }
  };
  void WakeOneLocked(WakeAfterUnlock* wake) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  size_t FreeCountLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return clean_.size() + dirty_.size() + (queued_.load(std::memory_order_relaxed) - taken_) -
           queue_stale_;
  }
  // Background zeroing's queue, which the maintenance thread works without the pool lock (below).
  // Queues a freed element when there is room and the pool still has clean elements to hand out
  // meanwhile; false: it goes on the dirty list instead. Returns through `kick` whether the
  // maintenance thread had finished everything queued before (and may be asleep).
  bool QueueForZeroingLocked(Element& e, void* element, bool* kick)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Takes the next zeroed element from the queue (skipping positions whose element was evicted
  // meanwhile), or {nullptr, nullptr}; the caller hands it out or releases it.
  struct Taken {
    void* p;
    Element* e;
  };
  Taken TakeQueuedLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The element queued at position `at`, or nullptr when it was evicted meanwhile (the slot's
  // address is no longer an element, or an element taken and queued again since).
  Element* QueuedAtLocked(uint32_t at) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Zeroes the next queued element (the maintenance thread's work; an allocator that finds
  // nothing else free does it too). False when none is queued or another thread is zeroing one.
  bool ZeroQueued();
  bool QueueUnzeroed() const {
    return queued_.load(std::memory_order_acquire) != zeroed_upto_.load(std::memory_order_acquire);
  }
  // Takes a free element that no other thread is writing (not one still queued for zeroing).
  void* PopAnyFreeLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Lets go of the pool lock for 50 µs, for a wait on another thread's work in flight (a source
  // call, a zeroing) that sends no wake-up.
  void PauseLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Zero(void* p) const;
  // Zeroes `p`, which the caller owns (taken from the free list, or marked kZeroing), on two cores
  // when it can: the element is the pool's zeroing job (`posted`: PostJobLocked(p) succeeded, else
  // the caller zeroes alone), the maintenance thread is asked to help (unless `by_maintenance`:
  // it is the caller), and both claim chunks until none is left. Returns once all of `p` is zero.
  // `mark_zeroed`: `p` is a freed element (kZeroing) that goes on the clean list once zero.
  void ZeroShared(void* p, bool posted, bool by_maintenance, bool mark_zeroed)
      ABSL_LOCKS_EXCLUDED(mu_);
  // Makes `p`, owned by the caller, the pool's zeroing job. False when another element is the job,
  // or `p` is a single chunk. `free_element`: `p` is a freed element (kZeroing) that an allocator
  // may take while it is being zeroed; false when the caller already took it.
  bool PostJobLocked(void* p, bool free_element) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Who works on a job: the thread that posted it, the maintenance thread helping, or an
  // allocator that took the element while it was being zeroed.
  enum class JobRole : uint8_t { kOwner, kHelper, kJoiner };
  // Claims and zeroes chunks of the job on `p` until none is left (from the back: the maintenance
  // thread; from the front: others); then, except for a helper, waits for the chunks other threads
  // claimed. The caller is counted in job_.users; this uncounts it (and with `mark_zeroed` puts
  // the element on the clean list in the same critical section).
  void WorkOnJob(void* p, JobRole role, bool from_back, bool mark_zeroed) ABSL_LOCKS_EXCLUDED(mu_);
  uint32_t JobChunks() const { return static_cast<uint32_t>(options_.element_size / kZeroChunk); }
  void MarkZeroed(void* element) ABSL_LOCKS_EXCLUDED(mu_);
  void NoteMaintainWorkLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (!maintain_hint_.load(std::memory_order_relaxed)) {
      maintain_hint_.store(true, std::memory_order_relaxed);
    }
  }
  void MarkZeroedLocked(void* element, WakeAfterUnlock* wake) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Observe(SlowPath what, uint64_t ns, int err) const {
    if (options_.observer != nullptr) options_.observer(options_.observer_ctx, *this, what, ns, err);
  }

  MempoolOptions options_;
  PageSource source_;
  size_t page_size_;  // the source's page size: what munmap lengths are rounded to
  PoolStats own_stats_;
  PoolStats* stats_;

  mutable BiasedLock mu_;
  absl::flat_hash_map<uintptr_t, Element> elements_ ABSL_GUARDED_BY(mu_);
  std::vector<void*> clean_ ABSL_GUARDED_BY(mu_);  // free, zeroed (or zero = none)
  std::vector<void*> dirty_ ABSL_GUARDED_BY(mu_);  // free, to be zeroed before reuse
  // The zeroing queue's next position to take, and how many zeroed positions ahead of it hold an
  // element evicted meanwhile (queue_, below).
  uint32_t taken_ ABSL_GUARDED_BY(mu_) = 0;
  uint32_t queue_stale_ ABSL_GUARDED_BY(mu_) = 0;
  size_t reserve_ ABSL_GUARDED_BY(mu_);
  size_t in_use_ ABSL_GUARDED_BY(mu_) = 0;
  size_t pending_ ABSL_GUARDED_BY(mu_) = 0;  // source calls in flight
  size_t waiters_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t requested_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  size_t high_water_ ABSL_GUARDED_BY(mu_) = 0;  // as published
  int64_t waste_ ABSL_GUARDED_BY(mu_) = 0;      // as published
  bool filled_ ABSL_GUARDED_BY(mu_) = false;
  int refill_holds_ ABSL_GUARDED_BY(mu_) = 0;  // RefillHolds alive: no top-up meanwhile
  uint64_t next_refill_ns_ ABSL_GUARDED_BY(mu_) = 0;
  int fill_err_ ABSL_GUARDED_BY(mu_) = 0;  // errno of the last failed Prefill source call
  WakeSeq wake_;  // a waiter's sleep: notified by frees and WakeWaiters

  // The element being zeroed in chunks any thread may claim (ZeroShared): one at a time per pool.
  static constexpr size_t kZeroChunk = size_t{64} << 10;
  struct ZeroJob {
    // Chunks not yet claimed: [front, back) as front << 32 | back.
    std::atomic<uint64_t> ends{0};
    std::atomic<uint32_t> done{0};  // chunks written (release: the writes happen-before a reader)
    void* element = nullptr;        // null: no job
    // The element is free while zeroed and no allocator has taken it yet: the next may, and join.
    // (Not its state alone: once taken, it can be freed again and zeroed outside the job while
    // the job's last users are still leaving.)
    bool free_element = false;
    int users = 0;                  // threads working on it; the slot frees when the last leaves
    bool Open() const {
      const uint64_t e = ends.load(std::memory_order_relaxed);
      return (e >> 32) < static_cast<uint32_t>(e);
    }
  };
  // On cache lines of their own: the zeroing threads update these for every 64 KiB chunk, and the
  // allocating thread's hits use the lines of the fields above.
  alignas(64) ZeroJob job_;  // element and users are guarded by mu_
  std::atomic<uint64_t> chunks_shared_{0};  // chunks zeroed by a thread that joined a job
  // Background zeroing without the pool lock on the maintenance thread's side — its taking the
  // lock for each element revoked the lock's bias (BiasedLock) and wrote the free lists and the
  // element table, all of which the allocating thread's next hits then had to fetch from the other
  // core (bench/RESULTS.md, figure 1). A thread that frees an element under mu_ writes it into
  // queue_[position % kQueue] and publishes queued_; the maintenance thread zeroes the positions in
  // order and publishes zeroed_upto_ (an allocator that finds nothing else free zeroes the next
  // one itself: whoever holds queue_busy_ does); a thread under mu_ takes zeroed positions from
  // taken_ (hands them out, or releases them). The maintenance thread reads queue_ and queued_ and
  // writes only zeroed_upto_ (and the elements' memory). Positions wrap (uint32_t differences);
  // at most kQueue are queued and not yet taken, so a slot is rewritten only after it was taken.
  static constexpr uint32_t kQueue = 64;
  alignas(64) void* queue_[kQueue] = {};  // written under mu_ before queued_ moves past the slot
  alignas(64) std::atomic<uint32_t> queued_{0};       // written under mu_
  alignas(64) std::atomic<uint32_t> zeroed_upto_{0};  // written by the holder of queue_busy_
  std::atomic<bool> queue_busy_{false};  // a thread in ZeroQueued (tests call Maintain() too)
  // Set (under mu_) by whatever may give Maintain() work — a dirty element, a posted zeroing job,
  // an element gone or a reserve raised (a refill) — and cleared by Maintain() under mu_ when it
  // finds none: an idle pool's upkeep then takes no lock, and so does not revoke the bias of the
  // thread that keeps using it (a membarrier each millisecond the maintenance thread polls).
  alignas(64) std::atomic<bool> maintain_hint_{true};
};

}  // namespace dmashim
