#include "pools/mempool.h"

#include <errno.h>
#include <sched.h>
#include <string.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>

#include "absl/base/optimization.h"
#include "absl/strings/str_cat.h"
#include "pools/maintenance.h"

namespace dmashim {

absl::StatusOr<std::unique_ptr<Mempool>> Mempool::Create(MempoolOptions options, PoolStats* stats,
                                                          const SysCalls* sys) {
  const size_t page = SourcePageSize(options.source.kind);
  if (options.name.empty() || options.name.size() >= kPoolNameMax) {
    return absl::InvalidArgumentError(
        absl::StrCat("pool name must be 1..", kPoolNameMax - 1, " bytes, got \"", options.name,
                     "\""));
  }
  if (options.element_size == 0) options.element_size = page;
  if (options.element_size % page != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "pool ", options.name, ": element size ", options.element_size, " is not a multiple of the ",
        SourceKindName(options.source.kind), " page size ", page));
  }
  if (options.max != 0 && options.reserve > options.max) {
    return absl::InvalidArgumentError(absl::StrCat("pool ", options.name, ": reserve ",
                                                   options.reserve, " exceeds max ", options.max));
  }
  if (options.policy.mode == Mode::kTimeout && options.policy.timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat("pool ", options.name, ": mode timeout needs a positive duration"));
  }
  if (options.retry_interval <= absl::ZeroDuration() || options.retry_max < options.retry_interval) {
    return absl::InvalidArgumentError(absl::StrCat(
        "pool ", options.name, ": retry_interval must be positive and not above retry_max"));
  }
  return std::unique_ptr<Mempool>(new Mempool(std::move(options), stats, sys));
}

Mempool::Mempool(MempoolOptions options, PoolStats* stats, const SysCalls* sys)
    : options_(std::move(options)),
      source_(options_.source, options_.element_size, sys),
      page_size_(SourcePageSize(options_.source.kind)),
      stats_(stats ? stats : &own_stats_),
      reserve_(options_.reserve) {
  if (!options_.biased_lock) mu_.DisallowBias();
  InitRecord(stats_);
  // Room for the reserve and as many again in use, made here on the thread that creates the pool:
  // the maintenance thread then refills the reserve without allocating. Its first malloc would
  // give it a glibc arena of its own — 64 MiB of address space, which counts against
  // RLIMIT_MEMLOCK for mlockall (tests/reliability/pinned_test.cc measures it).
  const size_t room = 2 * reserve_ + 8;
  elements_.reserve(room);
  clean_.reserve(room);
  dirty_.reserve(room);
  RegisterPool(this);
}

Mempool::~Mempool() {
  UnregisterPool(this);  // the maintenance thread is not in ZeroQueued() from here on
  FutexLockGuard l(&mu_);
  for (void* p : clean_) source_.Unmap(p);
  for (void* p : dirty_) source_.Unmap(p);
  // Queued for zeroing, zeroed or not yet (not those evicted meanwhile).
  for (uint32_t at = taken_; at != queued_.load(std::memory_order_relaxed); ++at) {
    if (QueuedAtLocked(at) != nullptr) source_.Unmap(queue_[at % kQueue]);
  }
}

size_t Mempool::reserve() const {
  FutexLockGuard l(&mu_);
  return reserve_;
}

size_t Mempool::keep() const {
  FutexLockGuard l(&mu_);
  return options_.keep.value_or(std::max<size_t>(reserve_, 8));
}

size_t Mempool::free_zeroed() const {
  FutexLockGuard l(&mu_);
  return clean_.size() + (zeroed_upto_.load(std::memory_order_acquire) - taken_) - queue_stale_;
}

void Mempool::InitRecord(PoolStats* s) const {
  InitPoolStats(s, options_.name.c_str(), PoolKind::kMempool,
                static_cast<uint32_t>(options_.policy.mode), options_.element_size);
  s->flags = kStatsDerivedUse;
  s->reserve_target.store(static_cast<int64_t>(reserve_), std::memory_order_relaxed);
}

void Mempool::PublishLocked() {
  stats_->elements_total.store(static_cast<int64_t>(elements_.size()), std::memory_order_relaxed);
  PublishUseLocked();
}

void Mempool::PublishUseLocked() {
  PoolStats* s = stats_;  // one load: the stores below could alias the member for the compiler
  // alloc_reserve and frees are written only under mu_ (BumpLocked): exact here.
  const int64_t counted = static_cast<int64_t>(s->alloc_reserve.load(std::memory_order_relaxed) -
                                               s->frees.load(std::memory_order_relaxed));
  // Release: a reader that sees the new base also sees the counts it was computed from.
  s->use_base.store(static_cast<int64_t>(in_use_) - counted, std::memory_order_release);
  TrackUseLocked();
}

void Mempool::PauseLocked() {
  mu_.Unlock();
  usleep(50);
  mu_.Lock();
}

// How many clean elements ahead a hit prefetches (measured: 1 ahead left half of the remote touch
// exposed, 4 ahead hid it; a remote line takes longer than one hit to arrive).
constexpr size_t kPrefetchAhead = 4;

// A hint: never faults, whatever `p` points at.
static inline void PrefetchForWrite(const void* p) {
#if defined(__x86_64__)
  asm volatile("prefetchw %0" : : "m"(*static_cast<const char*>(p)));
#else
  __builtin_prefetch(p, 1, 3);
#endif
}

void Mempool::Zero(void* p) const { memset(p, 0, options_.element_size); }

void* Mempool::PopAnyFreeLocked() {
  if (dirty_.empty()) {
    if (void* p = TakeQueuedLocked().p) return p;
  }
  std::vector<void*>& from = dirty_.empty() ? clean_ : dirty_;
  if (from.empty()) return nullptr;
  void* p = from.back();
  from.pop_back();
  return p;
}

bool Mempool::QueueForZeroingLocked(Element& e, void* element, bool* kick) {
  const uint32_t at = queued_.load(std::memory_order_relaxed);
  // The queue serves a pool that still has clean elements to hand out while these are zeroed. One
  // that has none puts them on the dirty list, where an allocator that finds nothing clean takes
  // one and zeroes it with the maintenance thread's help, instead of waiting for its turn here.
  if (at - taken_ >= kQueue || clean_.empty()) return false;
  e.state = State::kQueued;
  e.queued_at = at;
  queue_[at % kQueue] = element;
  queued_.store(at + 1, std::memory_order_release);
  // The maintenance thread had zeroed everything queued before: it may be asleep, so it is woken
  // (once per run of frees). Otherwise it is still zeroing and looks at queued_ again when done —
  // unless it did so just before this store and this load missed its last zeroed_upto_ store (no
  // fence on either side): then its next poll, within a millisecond, finds the element.
  *kick = zeroed_upto_.load(std::memory_order_relaxed) == at;
  return true;
}

Mempool::Element* Mempool::QueuedAtLocked(uint32_t at) {
  auto it = elements_.find(reinterpret_cast<uintptr_t>(queue_[at % kQueue]));
  if (it == elements_.end() || it->second.state != State::kQueued || it->second.queued_at != at) {
    return nullptr;
  }
  return &it->second;
}

Mempool::Taken Mempool::TakeQueuedLocked() {
  const uint32_t upto = zeroed_upto_.load(std::memory_order_acquire);
  while (taken_ != upto) {
    const uint32_t at = taken_++;
    if (Element* e = QueuedAtLocked(at)) return {queue_[at % kQueue], e};
    --queue_stale_;  // evicted after its zeroing (ReleaseRange); the address may be mapped anew
  }
  return {nullptr, nullptr};
}

bool Mempool::ZeroQueued() {
  if (queued_.load(std::memory_order_relaxed) == zeroed_upto_.load(std::memory_order_relaxed) ||
      queue_busy_.exchange(true, std::memory_order_acquire)) {
    return false;
  }
  const uint32_t at = zeroed_upto_.load(std::memory_order_relaxed);
  const bool work = queued_.load(std::memory_order_acquire) != at;
  if (work) {
    Zero(queue_[at % kQueue]);
    zeroed_upto_.store(at + 1, std::memory_order_release);
  }
  queue_busy_.store(false, std::memory_order_release);
  if (work) wake_.Notify(1);  // a waiter may take it
  return work;
}

void Mempool::HandOutLocked(Element& e, size_t requested, bool region) {
  e.state = State::kInUse;
  e.region = region;
  e.requested = requested;
  ++in_use_;
  requested_bytes_ += static_cast<int64_t>(requested);
  // A new peak, or a request for less than an element, moves a published figure (once the pool is
  // warm, a hit that takes a whole element moves neither).
  if (ABSL_PREDICT_FALSE(in_use_ > high_water_ || requested != options_.element_size) &&
      options_.record_stats) {
    TrackUseLocked();
  }
}

void* Mempool::TakeCleanLocked(size_t requested, bool region) {
  // The next queued element's first line is asked for before zeroed_upto_ is read: at the start
  // of a run of hits both come from elsewhere (the line the maintenance thread wrote last, the
  // element from the shared cache), and this way the two transfers overlap.
  if (taken_ != queued_.load(std::memory_order_relaxed)) PrefetchForWrite(queue_[taken_ % kQueue]);
  // Checked here first: the call is made only when the queue holds zeroed elements.
  if (taken_ != zeroed_upto_.load(std::memory_order_relaxed)) {
    const Taken t = TakeQueuedLocked();
    if (t.p != nullptr) {
      // As below: the element's first line and the next zeroed ones' are asked for now.
      PrefetchForWrite(t.p);
      const uint32_t upto = zeroed_upto_.load(std::memory_order_relaxed);
      for (uint32_t i = 0; i < kPrefetchAhead && taken_ + i != upto; ++i) {
        PrefetchForWrite(queue_[(taken_ + i) % kQueue]);
      }
      HandOutLocked(*t.e, requested, region);
      return t.p;
    }
  }
  if (clean_.empty()) return nullptr;
  void* p = clean_.back();
  clean_.pop_back();
  // The element's first line was last written by the maintenance thread, which zeroed it on
  // another core: a first touch there is a cross-core transfer (≈ 55 ns here, most of a hit).
  // Ask for it now, to overlap the rest of the map, and for the next few clean elements'
  // first lines, which the next hits then find in this core's cache — as the kernel zeroes the
  // faulting subpage of a huge page last, to leave it cache-hot.
  PrefetchForWrite(p);
  const size_t n = clean_.size();
  for (size_t i = 1; i <= kPrefetchAhead && i <= n; ++i) PrefetchForWrite(clean_[n - i]);
  // The use gauges: the caller counts the hand-out (alloc_reserve) or publishes them.
  HandOutLocked(elements_.find(reinterpret_cast<uintptr_t>(p))->second, requested, region);
  return p;
}

void* Mempool::TryFreeListLocked(size_t requested, bool region, Ready* how) {
  *how = Ready::kClean;
  if (void* p = TakeCleanLocked(requested, region)) return p;
  void* p = nullptr;
  if (job_.element != nullptr && job_.free_element) {
    // An element another thread is zeroing after its free: taking it and helping finish it is
    // faster than zeroing one from scratch, and far faster than mapping a new page. Its zeroer's
    // MarkZeroedLocked then finds it in use and leaves it.
    p = job_.element;
    ++job_.users;
    job_.free_element = false;  // this taker's free of it later is a zeroing of its own
    *how = Ready::kJoined;
  } else if (!dirty_.empty()) {
    p = dirty_.back();
    dirty_.pop_back();
    // Zeroed by the taker: as the pool's job, with the maintenance thread, when there is none yet.
    *how = PostJobLocked(p, /*free_element=*/false) ? Ready::kDirty : Ready::kDirtyAlone;
  } else {
    return nullptr;
  }
  // The use gauges: the caller counts the hand-out (alloc_reserve) or publishes them.
  HandOutLocked(elements_.find(reinterpret_cast<uintptr_t>(p))->second, requested, region);
  return p;
}

void* Mempool::Finish(void* p, Ready how) {
  switch (how) {
    case Ready::kClean:
      break;
    case Ready::kDirty:  // a background-zeroing pool that could not keep ahead
      ZeroShared(p, /*posted=*/true, /*by_maintenance=*/false, /*mark_zeroed=*/false);
      break;
    case Ready::kDirtyAlone:
      Zero(p);
      break;
    case Ready::kJoined:
      WorkOnJob(p, JobRole::kJoiner, /*from_back=*/false, /*mark_zeroed=*/false);
      break;
  }
  return p;
}

bool Mempool::PostJobLocked(void* p, bool free_element) {
  if (JobChunks() < 2 || job_.element != nullptr) return false;
  job_.element = p;
  job_.free_element = free_element;
  job_.users = 1;
  job_.ends.store(JobChunks(), std::memory_order_relaxed);  // front 0, back = chunks
  job_.done.store(0, std::memory_order_relaxed);
  NoteMaintainWorkLocked();  // the maintenance thread may help
  return true;
}

void Mempool::ZeroShared(void* p, bool posted, bool by_maintenance, bool mark_zeroed) {
  if (!posted) {
    Zero(p);  // another element is the job (or this one is one chunk): zeroed by this thread alone
    if (mark_zeroed) MarkZeroed(p);
    return;
  }
  if (!by_maintenance) WakeMaintenance(/*now=*/true);  // to help
  WorkOnJob(p, JobRole::kOwner, /*from_back=*/by_maintenance, mark_zeroed);
}

void Mempool::WorkOnJob(void* p, JobRole role, bool from_back, bool mark_zeroed) {
  const uint32_t chunks = JobChunks();
  char* base = static_cast<char*>(p);
  // The maintenance thread takes chunks from the back, every other thread from the front: each
  // core then zeroes the same part of an element that cycles through the pool, which stays in its
  // cache — alternating chunks would move every line between the cores' caches on each cycle.
  uint64_t ends = job_.ends.load(std::memory_order_relaxed);
  for (;;) {
    const uint32_t front = static_cast<uint32_t>(ends >> 32), back = static_cast<uint32_t>(ends);
    if (front >= back) break;
    const uint64_t next = from_back ? ends - 1 : ends + (uint64_t{1} << 32);
    if (!job_.ends.compare_exchange_weak(ends, next, std::memory_order_relaxed)) continue;
    const uint32_t c = from_back ? back - 1 : front;
    memset(base + c * kZeroChunk, 0, kZeroChunk);
    job_.done.fetch_add(1, std::memory_order_release);
    if (role != JobRole::kOwner) chunks_shared_.fetch_add(1, std::memory_order_relaxed);
    ends = job_.ends.load(std::memory_order_relaxed);
  }
  // The chunks others claimed are at most one each, ≈ 2 µs: spin, then yield the core to them.
  const bool wait = role != JobRole::kHelper;
  for (int spin = 0; wait && job_.done.load(std::memory_order_acquire) < chunks; ++spin) {
    SpinOrYield(spin, 2000);
  }
  WakeAfterUnlock wake;
  FutexLockGuard l(&mu_);
  // The owner lists its element as clean in the same critical section as leaving the job (an
  // allocator then never finds it being zeroed but no longer the job, and maps a new page instead
  // of waiting for the last chunk) — unless an allocator took it meanwhile: it is in use then, or
  // already freed again and being zeroed outside the job.
  if (mark_zeroed && job_.free_element) MarkZeroedLocked(p, &wake);
  if (--job_.users == 0) {
    job_.element = nullptr;
    job_.free_element = false;
  }
}

void* Mempool::TrySource(size_t requested, bool region, int* err, bool* from_free, Ready* how,
                         bool count_reserve) {
  *from_free = false;
  {
    FutexLockGuard l(&mu_);
    // An element freed since the caller last looked is taken first: mapping a new one beside it
    // would grow the pool past `max` and waste a page.
    if (void* p = TryFreeListLocked(requested, region, how)) {
      *from_free = true;
      if (count_reserve) {
        BumpLocked(stats_->alloc_reserve);
      } else {
        PublishUseLocked();  // counted in alloc_waited by the caller
      }
      return p;
    }
    if (options_.max != 0 && in_use_ + pending_ >= options_.max) {
      *err = ENOMEM;
      return nullptr;
    }
    ++pending_;
  }
  const uint64_t t0 = MonotonicNs();
  void* p = source_.Map(err);
  const uint64_t took = MonotonicNs() - t0;
  stats_->source_calls.fetch_add(1, std::memory_order_relaxed);
  stats_->source_ns.fetch_add(took, std::memory_order_relaxed);
  if (took > options_.slow_source_ns) Observe(SlowPath::kSlowSource, took, p ? 0 : *err);
  FutexLockGuard l(&mu_);
  --pending_;
  if (p == nullptr) {
    stats_->source_failures.fetch_add(1, std::memory_order_relaxed);
    return nullptr;
  }
  HandOutLocked(elements_[reinterpret_cast<uintptr_t>(p)], requested, region);
  PublishLocked();
  return p;
}

size_t Mempool::Prefill() {
  for (;;) {
    {
      FutexLockGuard l(&mu_);
      filled_ = true;
      if (elements_.size() >= reserve_) return elements_.size();
      NoteMaintainWorkLocked();  // short: a refill, should this fill stop or fail
      // A release-and-retry is using the pages this fill would take (RefillHold): the fill stops,
      // also one already under way (the maintenance thread's, or start-up's beside it).
      if (refill_holds_ > 0) return elements_.size();
      if (elements_.size() + pending_ >= reserve_) {
        // Another thread (the maintenance thread refilling) is mapping the rest: its elements
        // count only once they are held, and its call may fail. Wait for it, then look again.
        PauseLocked();  // a source call takes ≈ 140 µs
        continue;
      }
      ++pending_;
    }
    int err = 0;
    const uint64_t t0 = MonotonicNs();
    void* p = source_.Map(&err);
    stats_->source_calls.fetch_add(1, std::memory_order_relaxed);
    stats_->source_ns.fetch_add(MonotonicNs() - t0, std::memory_order_relaxed);
    WakeAfterUnlock wake;
    FutexLockGuard l(&mu_);
    --pending_;
    if (p == nullptr) {
      stats_->source_failures.fetch_add(1, std::memory_order_relaxed);
      next_refill_ns_ = MonotonicNs() + absl::ToInt64Nanoseconds(options_.retry_interval);
      fill_err_ = err;
      // Another thread's map still in flight (the maintenance thread topping up) may succeed:
      // what is held is known once it is back.
      while (pending_ > 0) PauseLocked();
      return elements_.size();
    }
    elements_[reinterpret_cast<uintptr_t>(p)] = Element{};
    clean_.push_back(p);
    PublishLocked();
    WakeOneLocked(&wake);
  }
}

void* Mempool::Alloc(size_t requested, int* err) { return Alloc(requested, options_.policy, err); }

void* Mempool::Alloc(size_t requested, const WaitPolicy& policy, int* err) {
  return Alloc(requested, policy, err, nullptr, nullptr);
}

void Mempool::CountServedByReserve() {
  FutexLockGuard l(&mu_);
  BumpLocked(stats_->alloc_reserve);
  PublishUseLocked();  // a count without an element of the pool
}

void Mempool::WakeWaiters() {
  FutexLockGuard l(&mu_);
  if (waiters_ == 0) return;
  wake_.Notify(INT32_MAX);
}

void* Mempool::Alloc(size_t requested, const WaitPolicy& policy, int* err,
                     bool (*abandon)(void*), void* ctx) {
  return AllocImpl(requested, /*region=*/false, policy, err, abandon, ctx);
}

void* Mempool::AllocRegion(size_t requested, const WaitPolicy& policy, int* err) {
  return AllocImpl(requested, /*region=*/true, policy, err, nullptr, nullptr);
}

void* Mempool::AllocImpl(size_t requested, bool region, const WaitPolicy& policy, int* err,
                         bool (*abandon)(void*), void* ctx) {
  // The hit: a clean element from a filled pool, handed out as it is. Anything else — a pool to
  // fill, an element to zero or join, the source, a wait — is the slow path's, which looks again.
  {
    FutexLockGuard l(&mu_);
    if ((filled_ || reserve_ == 0) &&
        (!clean_.empty() || taken_ != zeroed_upto_.load(std::memory_order_relaxed))) {
      // Counted first: the count's add then overlaps the hand-out. Stats are on unless
      // the configuration says `stats = false`, so the counting path is laid out as the straight
      // one (GCC had put the count out of line, reached by a jump there and one back).
      if (ABSL_PREDICT_TRUE(options_.record_stats)) BumpLocked(stats_->alloc_reserve);
      if (void* p = TakeCleanLocked(requested, region)) return p;
      // Only zeroed queue positions whose elements were evicted meanwhile: not a hit after all.
      if (options_.record_stats) UnbumpLocked(stats_->alloc_reserve);
    }
  }
  return AllocSlow(requested, region, policy, err, abandon, ctx);
}

void* Mempool::AllocSlow(size_t requested, bool region, const WaitPolicy& policy, int* err,
                         bool (*abandon)(void*), void* ctx) {
  Ready how = Ready::kClean;
  bool need_fill = false;
  void* hit = nullptr;
  {
    FutexLockGuard l(&mu_);
    need_fill = !filled_ && reserve_ > 0;
    if (!need_fill) {
      hit = TryFreeListLocked(requested, region, &how);
      if (hit != nullptr && options_.record_stats) BumpLocked(stats_->alloc_reserve);
    }
  }
  if (need_fill) {
    Prefill();
    FutexLockGuard l(&mu_);
    hit = TryFreeListLocked(requested, region, &how);
    if (hit != nullptr) BumpLocked(stats_->alloc_reserve);
  }
  // Elements queued for zeroing and nothing else free: this thread zeroes the next one itself, or
  // waits for the thread zeroing it — as it would zero a dirty element — rather than map a new
  // page (or fail, in fail-fast mode, with the source exhausted and an element about to be ready).
  for (int spin = 0; hit == nullptr && QueueUnzeroed(); ++spin) {
    if (!ZeroQueued()) SpinOrYield(spin, 1000);
    FutexLockGuard l(&mu_);
    hit = TryFreeListLocked(requested, region, &how);
    if (hit != nullptr && options_.record_stats) BumpLocked(stats_->alloc_reserve);
  }
  // Outside the lock: an element that still needs zeroing is zeroed here, with the pool free.
  if (hit != nullptr) return Finish(hit, how);
  const uint64_t start_ns = MonotonicNs();
  bool from_free = false;
  if (void* p = TrySource(requested, region, err, &from_free, &how, /*count_reserve=*/true)) {
    if (!from_free) stats_->alloc_source.fetch_add(1, std::memory_order_relaxed);
    return Finish(p, how);
  }
  if (!IsShortageErrno(*err)) {
    stats_->fail_source.fetch_add(1, std::memory_order_relaxed);
    Observe(SlowPath::kFailure, 0, *err);
    return nullptr;
  }
  if (policy.mode == Mode::kFailFast) {
    stats_->fail_fast.fetch_add(1, std::memory_order_relaxed);
    *err = ENOMEM;
    Observe(SlowPath::kFailure, 0, *err);
    return nullptr;
  }
  Observe(SlowPath::kWaitBegin, 0, 0);
  void* p = Wait(requested, region, policy, err, start_ns, abandon, ctx);
  Observe(SlowPath::kWaitEnd, MonotonicNs() - start_ns, p ? 0 : *err);
  return p;
}

void* Mempool::Wait(size_t requested, bool region, const WaitPolicy& policy, int* err,
                    uint64_t start_ns, bool (*abandon)(void*), void* ctx) {
  WaitRounds rounds(policy, start_ns, options_.retry_interval, options_.retry_max);
  int64_t next_source_ns = static_cast<int64_t>(start_ns) + rounds.retry_ns();

  const int slot = BeginWait(stats_, start_ns);
  {
    FutexLockGuard l(&mu_);
    ++waiters_;
  }
  void* got = nullptr;
  Ready how = Ready::kClean;
  int fail = 0;  // errno to fail with, 0 while waiting
  for (;;) {
    const uint32_t seq = wake_.Seen();
    {
      FutexLockGuard l(&mu_);
      got = TryFreeListLocked(requested, region, &how);
      if (got != nullptr) {
        --waiters_;
        PublishUseLocked();  // counted in alloc_waited below
        break;
      }
    }
    if (abandon != nullptr && abandon(ctx)) {
      fail = EALREADY;  // the caller has what it waited for elsewhere: not a failure
      break;
    }
    const int64_t now = static_cast<int64_t>(MonotonicNs());
    if (now >= next_source_ns) {
      int serr = 0;
      bool from_free = false;
      got = TrySource(requested, region, &serr, &from_free, &how, /*count_reserve=*/false);
      if (got != nullptr) {
        FutexLockGuard l(&mu_);
        --waiters_;
        break;
      }
      if (!IsShortageErrno(serr)) {
        fail = serr;
        stats_->fail_source.fetch_add(1, std::memory_order_relaxed);
        break;
      }
      rounds.BackOff();
      next_source_ns = now + rounds.retry_ns();
    }
    if (rounds.Expired(now)) {
      fail = ENOMEM;
      stats_->fail_timeout.fetch_add(1, std::memory_order_relaxed);
      break;
    }
    const int r = wake_.Wait(seq, rounds.Cap(next_source_ns - now, now));
    if (r == EINTR && policy.interruptible) {
      fail = EINTR;
      stats_->fail_interrupted.fetch_add(1, std::memory_order_relaxed);
      break;
    }
  }
  if (got == nullptr) {
    WakeAfterUnlock wake;
    FutexLockGuard l(&mu_);
    --waiters_;
    // A wake-up this thread consumed but did not use goes to the next waiter.
    if (FreeCountLocked() > 0) WakeOneLocked(&wake);
  }
  EndWait(stats_, slot, MonotonicNs() - start_ns);
  if (got == nullptr) {
    *err = fail;
    return nullptr;
  }
  stats_->alloc_waited.fetch_add(1, std::memory_order_relaxed);
  return Finish(got, how);
}

void Mempool::WakeOneLocked(WakeAfterUnlock* wake) {
  if (waiters_ == 0) return;
  wake->seq = &wake_;
}

bool Mempool::KeepOnFreeLocked() const {
  const size_t keep = options_.keep.value_or(std::max<size_t>(reserve_, 8));
  return waiters_ > 0 || FreeCountLocked() < keep || elements_.size() <= reserve_;
}

bool Mempool::Free(void* element) { return FreeImpl(element, /*region=*/false); }

bool Mempool::FreeRegion(void* element, size_t len) {
  // The kernel rounds a huge-page munmap length up to whole pages: only a length that rounds to the
  // element returns it; a shorter or longer one is a partial unmap for the caller to handle.
  if (len == 0 || len > options_.element_size ||
      ((len + page_size_ - 1) & ~(page_size_ - 1)) != options_.element_size) {  // a power of 2
    return false;
  }
  return FreeImpl(element, /*region=*/true);
}

bool Mempool::FreeImpl(void* element, bool region) {
  enum class Then { kNothing, kRelease, kWakeMaintenance, kZeroNow } then = Then::kNothing;
  bool posted = false;  // kZeroNow: the element is the pool's zeroing job
  {
    WakeAfterUnlock wake;
    FutexLockGuard l(&mu_);
    auto it = elements_.find(reinterpret_cast<uintptr_t>(element));
    if (it == elements_.end() || it->second.state != State::kInUse) return false;
    if (region && !it->second.region) return false;
    if (it->second.prot_changed) {
      // Rare (the application mprotect-ed the region): the system call under the lock keeps the
      // element from being handed out again before it is read-write.
      source_.ResetProtection(element);
      it->second.prot_changed = false;
    }
    it->second.region = false;
    --in_use_;
    const bool whole = it->second.requested == options_.element_size;  // no waste to take back
    requested_bytes_ -= static_cast<int64_t>(it->second.requested);
    it->second.requested = 0;
    if (ABSL_PREDICT_TRUE(options_.record_stats)) BumpLocked(stats_->frees);
    if (!KeepOnFreeLocked()) {
      elements_.erase(it);
      NoteMaintainWorkLocked();
      then = Then::kRelease;
    } else if (options_.zero == ZeroMode::kNone) {
      it->second.state = State::kFree;
      clean_.push_back(element);
      WakeOneLocked(&wake);
    } else if (options_.zero == ZeroMode::kBackground && waiters_ == 0) {
      bool kick = false;
      if (QueueForZeroingLocked(it->second, element, &kick)) {
        if (kick) then = Then::kWakeMaintenance;
      } else {
        it->second.state = State::kFree;
        dirty_.push_back(element);
        // One kick per run of frees: with dirty elements already listed, the maintenance thread
        // was kicked for the first of them after it last found the list empty, and it takes
        // elements until the list is empty again before it sleeps. The hint likewise: this is the
        // only place dirty_ grows, and Maintain() clears the hint only with dirty_ empty.
        if (dirty_.size() == 1) {
          NoteMaintainWorkLocked();
          then = Then::kWakeMaintenance;
        }
      }
    } else {
      it->second.state = State::kZeroing;  // eager, or a waiter needs it now
      posted = PostJobLocked(element, /*free_element=*/true);
      then = Then::kZeroNow;
    }
    // Usually neither: a whole element back in the pool keeps every published figure true.
    if (ABSL_PREDICT_FALSE(then == Then::kRelease || !whole) && options_.record_stats) {
      if (then == Then::kRelease) {
        PublishLocked();  // elements_total went down
      } else {
        TrackUseLocked();  // the free counted, the use gauges hold (see PublishUseLocked)
      }
    }
  }
  switch (then) {
    case Then::kNothing:
      break;
    case Then::kRelease:
      source_.Unmap(element);
      stats_->source_releases.fetch_add(1, std::memory_order_relaxed);
      break;
    case Then::kWakeMaintenance:
      WakeMaintenance();
      break;
    case Then::kZeroNow:
      ZeroShared(element, posted, /*by_maintenance=*/false, /*mark_zeroed=*/true);
      break;
  }
  return true;
}

void Mempool::MarkZeroed(void* element) {
  WakeAfterUnlock wake;
  FutexLockGuard l(&mu_);
  MarkZeroedLocked(element, &wake);
}

void Mempool::MarkZeroedLocked(void* element, WakeAfterUnlock* wake) {
  auto it = elements_.find(reinterpret_cast<uintptr_t>(element));
  // Evicted meanwhile, or taken by an allocator that joined its zeroing: not the pool's to list.
  if (it == elements_.end() || it->second.state != State::kZeroing) return;
  // On the clean list from here on: no longer an element to take by joining its zeroing (a helper
  // may still be leaving the job).
  if (job_.element == element) job_.free_element = false;
  it->second.state = State::kFree;
  clean_.push_back(element);
  // No store to the record: a free element being zeroed already counts in the reserve level
  // (elements_total − in_use).
  WakeOneLocked(wake);
}

bool Mempool::Owns(const void* p) const {
  FutexLockGuard l(&mu_);
  return elements_.contains(reinterpret_cast<uintptr_t>(p));
}

bool Mempool::Forget(void* element) {
  FutexLockGuard l(&mu_);
  auto it = elements_.find(reinterpret_cast<uintptr_t>(element));
  if (it == elements_.end() || it->second.state != State::kInUse) return false;
  --in_use_;
  requested_bytes_ -= static_cast<int64_t>(it->second.requested);
  elements_.erase(it);
  NoteMaintainWorkLocked();
  PublishLocked();
  return true;
}

size_t Mempool::ForgetRegions(const void* addr, size_t len) {
  return ReleaseRangeImpl(addr, len, /*forget=*/true, /*evict=*/false).forgotten;
}

RangeReleased Mempool::ReleaseRange(const void* addr, size_t len) {
  return ReleaseRangeImpl(addr, len, /*forget=*/true, /*evict=*/true);
}

RangeReleased Mempool::ReleaseRangeImpl(const void* addr, size_t len, bool forget, bool evict) {
  const uintptr_t lo = reinterpret_cast<uintptr_t>(addr), hi = lo + len;
  RangeReleased out;
  std::vector<void*> evicted;
  {
    FutexLockGuard l(&mu_);
    // An element being zeroed outside the lock must finish first: unmapping it under the zeroing
    // thread would let it write into whatever the caller maps there next.
    std::vector<uintptr_t> hit = OverlappingLocked(lo, hi);
    auto zeroing_overlap = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      const uint32_t zeroed = zeroed_upto_.load(std::memory_order_acquire) - taken_;
      for (uintptr_t a : hit) {
        auto it = elements_.find(a);
        if (it == elements_.end()) continue;
        if (it->second.state == State::kZeroing) return true;
        // Queued, and not zeroed yet: the maintenance thread is about to write it.
        if (it->second.state == State::kQueued && it->second.queued_at - taken_ >= zeroed) {
          return true;
        }
      }
      return false;
    };
    if (evict && zeroing_overlap()) WakeMaintenance();  // polled within 1 ms anyway
    while (evict && zeroing_overlap()) {
      PauseLocked();
      hit = OverlappingLocked(lo, hi);
    }
    // One pass over the elements the range overlaps: regions in use are forgotten (the caller's
    // call takes their memory), free elements are evicted.
    for (uintptr_t a : hit) {
      auto it = elements_.find(a);
      const Element& e = it->second;
      if (forget && e.state == State::kInUse && e.region) {
        --in_use_;
        requested_bytes_ -= static_cast<int64_t>(e.requested);
        elements_.erase(it);
        ++out.forgotten;
      } else if (evict && (e.state == State::kFree || e.state == State::kQueued)) {
        if (e.state == State::kQueued) ++queue_stale_;  // skipped when its position is taken
        evicted.push_back(reinterpret_cast<void*>(a));
        elements_.erase(it);
      }
    }
    if (!evicted.empty()) {
      auto gone = [&](void* p) { return std::find(evicted.begin(), evicted.end(), p) != evicted.end(); };
      std::erase_if(clean_, gone);
      std::erase_if(dirty_, gone);
      // The caller is about to map there (MAP_FIXED_NOREPLACE on an address it knows is free): a
      // top-up of the reserve right now could get that very address from the kernel. It waits.
      next_refill_ns_ = MonotonicNs() + absl::ToInt64Nanoseconds(options_.retry_interval);
    }
    if (out.forgotten > 0 || !evicted.empty()) {
      NoteMaintainWorkLocked();
      PublishLocked();
    }
  }
  for (void* p : evicted) source_.Unmap(p);
  stats_->source_releases.fetch_add(evicted.size(), std::memory_order_relaxed);
  out.evicted = evicted.size();
  return out;
}

std::vector<uintptr_t> Mempool::OverlappingLocked(uintptr_t lo, uintptr_t hi) const {
  std::vector<uintptr_t> out;
  if (hi <= lo) return out;
  // Elements start on source pages: a range covering few pages is looked up page by page (an
  // mprotect or munmap of one region in a pool of thousands), a wide one scans the table.
  // The first page an element could start on and still reach past `lo`.
  const size_t span = options_.element_size;
  const uintptr_t first = lo >= span ? (lo - span) / page_size_ * page_size_ + page_size_ : 0;
  const size_t candidates = (hi - first + page_size_ - 1) / page_size_;
  if (candidates < elements_.size()) {
    for (uintptr_t a = first; a < hi; a += page_size_) {
      if (elements_.contains(a)) out.push_back(a);
    }
  } else {
    for (const auto& [a, e] : elements_) {
      if (a < hi && lo < a + options_.element_size) out.push_back(a);
    }
  }
  return out;
}

void Mempool::MarkProtectionChanged(const void* addr, size_t len) {
  const uintptr_t lo = reinterpret_cast<uintptr_t>(addr);
  FutexLockGuard l(&mu_);
  for (uintptr_t a : OverlappingLocked(lo, lo + len)) {
    Element& e = elements_.find(a)->second;
    if (e.state == State::kInUse && e.region) e.prot_changed = true;
  }
}

size_t Mempool::ReleaseFree(size_t count) {
  std::vector<void*> released;
  {
    FutexLockGuard l(&mu_);
    while (released.size() < count) {
      void* p = PopAnyFreeLocked();
      if (p == nullptr) break;
      elements_.erase(reinterpret_cast<uintptr_t>(p));
      released.push_back(p);
    }
    if (!released.empty()) {
      NoteMaintainWorkLocked();
      PublishLocked();
      // Top the reserve up again once the retried call is done.
      next_refill_ns_ = MonotonicNs() + absl::ToInt64Nanoseconds(options_.retry_interval);
    }
  }
  for (void* p : released) source_.Unmap(p);
  stats_->source_releases.fetch_add(released.size(), std::memory_order_relaxed);
  return released.size();
}

Mempool::RefillHold::RefillHold(Mempool* pool) : pool_(pool) {
  if (pool_ == nullptr) return;
  FutexLockGuard l(&pool_->mu_);
  ++pool_->refill_holds_;
  // A source call in flight (a fill, or an allocation's miss) finishes first: once this returns,
  // no page is on its way into the pool until the hold ends.
  while (pool_->pending_ > 0) pool_->PauseLocked();
}

Mempool::RefillHold::~RefillHold() {
  if (pool_ == nullptr) return;
  FutexLockGuard l(&pool_->mu_);
  --pool_->refill_holds_;
}

ResizeResult Mempool::Resize(size_t new_reserve) {
  std::vector<void*> surplus;
  {
    FutexLockGuard l(&mu_);
    reserve_ = new_reserve;
    NoteMaintainWorkLocked();
    stats_->reserve_target.store(static_cast<int64_t>(new_reserve), std::memory_order_relaxed);
    const size_t keep = options_.keep.value_or(std::max<size_t>(reserve_, 8));
    while (elements_.size() > reserve_ && FreeCountLocked() > 0 &&
           (FreeCountLocked() > keep || elements_.size() > std::max(reserve_, keep))) {
      void* p = PopAnyFreeLocked();
      if (p == nullptr) break;  // the rest are queued for zeroing
      elements_.erase(reinterpret_cast<uintptr_t>(p));
      surplus.push_back(p);
    }
    PublishLocked();
  }
  for (void* p : surplus) source_.Unmap(p);
  stats_->source_releases.fetch_add(surplus.size(), std::memory_order_relaxed);
  ResizeResult r;
  r.target = new_reserve;
  r.held = Prefill();
  if (r.held < new_reserve) {
    FutexLockGuard l(&mu_);
    r.err = fill_err_ != 0 ? fill_err_ : ENOMEM;
  }
  return r;
}

bool Mempool::Maintain() {
  enum class Work { kNone, kHelp, kZero, kRefill } work = Work::kNone;
  void* p = nullptr;
  bool posted = false;
  // The zeroing queue first, without the pool lock — unless an allocator is zeroing an element it
  // needs now and could use help (the lock's path below).
  if (!job_.Open() && ZeroQueued()) return true;
  // Nothing happened since the last look found nothing to do (acquire: what was set under mu_
  // before a kick is seen here after the kick).
  if (!maintain_hint_.load(std::memory_order_acquire)) return false;
  {
    FutexLockGuard l(&mu_);
    if (job_.element != nullptr && job_.Open()) {
      // Another thread is zeroing an element it needs now: take chunks of it on this core.
      p = job_.element;
      ++job_.users;
      work = Work::kHelp;
    } else if (!dirty_.empty()) {
      // The newest dirty element, the one most likely still in a cache. An allocator that finds
      // nothing clean meanwhile joins this zeroing (TryFreeListLocked) rather than map a new page.
      p = dirty_.back();
      dirty_.pop_back();
      elements_[reinterpret_cast<uintptr_t>(p)].state = State::kZeroing;
      posted = PostJobLocked(p, /*free_element=*/true);
      work = Work::kZero;
    } else if (filled_ && elements_.size() + pending_ < reserve_) {
      // Short: looked at again each round until the refill is due (and done).
      if (MonotonicNs() >= next_refill_ns_) work = Work::kRefill;
    } else {
      maintain_hint_.store(false, std::memory_order_relaxed);  // under mu_: no set is lost
    }
  }
  switch (work) {
    case Work::kNone:
      return false;
    case Work::kHelp:
      WorkOnJob(p, JobRole::kHelper, /*from_back=*/true, /*mark_zeroed=*/false);
      return true;
    case Work::kZero:
      ZeroShared(p, posted, /*by_maintenance=*/true, /*mark_zeroed=*/true);
      return true;
    case Work::kRefill:
      Prefill();
      return false;  // retried; the next attempt waits for retry_interval
  }
  return false;
}

void Mempool::ForkPrepare() {
  mu_.Lock();
  // Free elements stay behind (MADV_DONTFORK), handed-out ones are inherited (MADV_DOFORK). Applied
  // lazily here, at fork time, so the allocation fast path makes no system call.
  for (auto& [addr, e] : elements_) {
    const bool inherit = e.state == State::kInUse;
    if (e.inherit_applied != inherit &&
        source_.SetForkInheritance(reinterpret_cast<void*>(addr), inherit) == 0) {
      e.inherit_applied = inherit;
    }
  }
}

void Mempool::ForkParent() { mu_.Unlock(); }

void Mempool::ForkChild() {
  mu_.DropBiasInForkChild();
  // Only the forking thread exists; free elements were not inherited. Keep what the app holds.
  for (auto it = elements_.begin(); it != elements_.end();) {
    auto cur = it++;
    if (cur->second.state != State::kInUse) elements_.erase(cur);
  }
  clean_.clear();
  dirty_.clear();
  queued_.store(0, std::memory_order_relaxed);  // its elements were free: erased above
  zeroed_upto_.store(0, std::memory_order_relaxed);
  queue_busy_.store(false, std::memory_order_relaxed);
  taken_ = 0;
  queue_stale_ = 0;
  job_.element = nullptr;  // its zeroing threads are not in the child
  job_.users = 0;
  waiters_ = 0;
  pending_ = 0;
  refill_holds_ = 0;  // a release-and-retry under way is another thread's, not in the child
  filled_ = false;  // the child rebuilds its reserve lazily
  maintain_hint_.store(true, std::memory_order_relaxed);
  stats_->blocked_now.store(0, std::memory_order_relaxed);
  for (auto& s : stats_->waiter_start_ns) s.store(0, std::memory_order_relaxed);
  PublishLocked();
  mu_.Unlock();
}

void Mempool::SetRecordStats(bool on) {
  FutexLockGuard l(&mu_);
  if (options_.record_stats == on) return;
  options_.record_stats = on;
  if (on) PublishUseLocked();  // the hand-outs and frees made while off, folded into use_base
}

void Mempool::RebindStats(PoolStats* stats) {
  FutexLockGuard l(&mu_);
  InitRecord(stats);
  stats_ = stats;
  high_water_ = 0;  // the new record holds none of the figures yet
  waste_ = 0;
  PublishLocked();
}

}  // namespace dmashim
