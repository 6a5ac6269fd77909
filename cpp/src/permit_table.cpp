// The permit table (permit_table.hpp): the threads' side. permit_monitor.cpp lends and reclaims.
#include "corral/permit_table.hpp"

#include <pthread.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <new>
#include <stdexcept>
#include <system_error>

#include "assert.hpp"
#include "corral/budget.hpp"
#include "futex.hpp"
#include "permit_monitor.hpp"
#include "permit_state.hpp"

namespace corral {
namespace {

using detail::holder;
using detail::holder_stage;
using detail::waiter;

thread_local holder this_thread;

// A waiter re-checks the starvation rule this often while it sleeps.
constexpr auto recheck_interval = std::chrono::milliseconds(100);

void wake(waiter* w) noexcept {
  if (w != nullptr) detail::futex_wake(&w->granted, 1);
}

pid_t current_tid() noexcept {
  return static_cast<pid_t>(::syscall(SYS_gettid));
}

}  // namespace

// -- state
// ------------------------------------------------------------------------------------------

bool permit_table::state::try_take_locked() noexcept {
  if (held >= permits || head != nullptr) return false;
  if (!source_allows_one_more_locked()) return false;  // machine-wide source: permit_sharing.cpp
  ++held;
  ++acquires;
  return true;
}

waiter* permit_table::state::give_back_locked() noexcept {
  last_turnover = clock::now();
  waiter* const w = head;
  if (held <= permits && w != nullptr && source_allows_hand_over_locked()) {
    // a hand-over: `held` stays (and a permit drawn from a machine-wide source with it), the
    // waiter holds it now
    CORRAL_ASSERT(w->granted.load(std::memory_order_relaxed) == 0);  // granted once, while queued
    unlink_locked(w);
    ++acquires;
    w->granted.store(1, std::memory_order_relaxed);  // under the mutex: see permit_state.hpp
    return w;
  }
  CORRAL_ASSERT(held > 0);
  --held;
  return_surplus_locked();  // permit_sharing.cpp
  return nullptr;
}

void permit_table::state::unlink_locked(waiter* w) noexcept {
  CORRAL_ASSERT(waiting > 0);
  CORRAL_ASSERT((w->prev ? w->prev->next : head) == w);
  CORRAL_ASSERT((w->next ? w->next->prev : tail) == w);
  (w->prev ? w->prev->next : head) = w->next;
  (w->next ? w->next->prev : tail) = w->prev;
  w->next = w->prev = nullptr;
  --waiting;
  CORRAL_ASSERT((head == nullptr) == (waiting == 0));
}

unsigned permit_table::state::count_waiters_locked() const noexcept {
  unsigned n = 0;
  for (const waiter* w = head; w != nullptr; w = w->next) ++n;
  return n;
}

unsigned permit_table::state::count_returning_locked() const noexcept {
  unsigned n = 0;
  for (const waiter* w = head; w != nullptr; w = w->next) n += w->returning ? 1U : 0U;
  return n;
}

bool permit_table::state::starved_locked(clock::time_point& since, std::uint64_t& starts_seen,
                                         clock::time_point now) noexcept {
  const std::uint64_t starts = task_starts.load(std::memory_order_relaxed);
  if (starts != starts_seen) {  // tasks still start (a keeper's next task, too): not a standstill
    starts_seen = starts;
    since = now;
    return false;
  }
  return now - since >= starvation_limit && now - last_turnover >= starvation_limit;
}

bool permit_table::state::take_kept_locked(holder* h) noexcept {
  std::uint32_t expected = detail::kept;
  // acq_rel: pairs with the keeper's own compare-exchange; whoever wins has the permit.
  if (!h->keep.compare_exchange_strong(expected, detail::taken, std::memory_order_acq_rel))
    return false;
  --kept_n;
  forget_holder_locked(h);
  return true;
}

bool permit_table::state::take_over_kept_locked() noexcept {
  if (head != nullptr) return false;
  for (holder* h : holders)
    if (h->keep.load(std::memory_order_relaxed) == detail::kept && take_kept_locked(h)) {
      ++acquires;
      last_turnover = clock::now();
      return true;
    }
  return false;
}

bool permit_table::state::may_keep_locked(const detail::holder& h,
                                          clock::time_point now) const noexcept {
  if (!monitor_wanted || monitor == nullptr || monitor->exited()) return false;  // none to reclaim
  if (held > permits) return false;                                              // overdrawn
  if (!source_allows_hand_over_locked()) return false;  // over what the machine-wide source gave
  // Every waiter holds a task (its thread took it from its pool's queue, as plain python's would,
  // before it asked for a permit). One back from a wait (at the front) is never kept waiting; new
  // tasks wait until the keeper's slice ends, as the kernel lets a thread run its slice.
  if (head == nullptr) return true;
  return !head->returning && now - h.slice_start < hand_over_slice;
}

void permit_table::state::wait_locked(std::unique_lock<std::mutex>& lock, bool front) {
  waiter w;
  w.returning = front;
  if (front) {
    w.next = head;
    (head ? head->prev : tail) = &w;
    head = &w;
  } else {
    w.prev = tail;
    (tail ? tail->next : head) = &w;
    tail = &w;
  }
  ++waiting;
  ++waits;
  CORRAL_ASSERT(head != nullptr && tail != nullptr);
  auto since = clock::now();
  std::uint64_t starts_seen = task_starts.load(std::memory_order_relaxed);
  auto poll = std::chrono::milliseconds(1);  // the machine-wide source's, doubled up to 16 ms
  for (;;) {
    lock.unlock();
    detail::futex_wait_for(w.granted, 0, source != nullptr ? poll : recheck_interval);
    lock.lock();
    if (w.granted.load(std::memory_order_relaxed) != 0) return;  // granted under this mutex
    // A permit another process gave back wakes nobody here: the first waiter looks (docs/share.md).
    if (source != nullptr && head == &w && held < permits && source_allows_one_more_locked()) {
      unlink_locked(&w);
      ++held;
      ++acquires;
      return;
    }
    poll = std::min(poll * 2, std::chrono::milliseconds(16));
    if (starved_locked(since, starts_seen, clock::now())) {
      // Nothing moved for the whole limit: the holders may be waiting on us. Run over the budget.
      unlink_locked(&w);
      ++held;
      ++acquires;
      ++overdrafts;
      last_turnover = clock::now();  // the next overdraft needs another full period of standstill
      return;
    }
  }
}

void permit_table::state::forget_holder_locked(holder* h) noexcept {
  auto it = std::find(holders.begin(), holders.end(), h);
  if (it != holders.end()) {
    *it = holders.back();
    holders.pop_back();
  }
}

// -- permit_table
// ----------------------------------------------------------------------------------

permit_table::permit_table(unsigned permits, std::chrono::microseconds hand_over_slice)
    : state_(std::make_unique<state>(std::max(1u, permits), hand_over_slice)) {}

permit_table::~permit_table() {
  set_wait_monitor(false);
  std::lock_guard<std::mutex> lock(state_->mutex);
  // Threads keeping a permit of this table find it taken and never touch the table again.
  while (!state_->holders.empty()) {
    holder* h = state_->holders.back();
    if (!state_->take_kept_locked(h)) state_->holders.pop_back();
  }
}

namespace {
permit_table* process_table = nullptr;
}  // namespace

permit_table& permit_table::process() {
  static permit_table* const table = [] {
    budget_options options;
    options.with_topology = false;
    auto* t = new permit_table(static_cast<unsigned>(std::max(1, read_budget(options).cpus)));
    process_table = t;
    // Fork: no thread may be inside the table while the child copies it; in the child, the other
    // threads (holders, waiters, the monitor) are gone and only the forking thread's share remains.
    pthread_atfork(&fork_prepare, &fork_parent, &fork_child);
    return t;
  }();
  // The machine-wide source the environment names (permit_source.hpp). When joining throws (a bad
  // CORRAL_SHARE), the next call tries again and throws again: no process runs half-joined.
  static const bool sourced = [] {
    std::string note;
    std::shared_ptr<permit_source> source = permit_source_from_environment(&note);
    table->set_source(std::move(source));
    std::lock_guard<std::mutex> lock(table->state_->mutex);
    table->state_->source_note = note;
    return true;
  }();
  (void)sourced;
  return *table;
}

void permit_table::fork_prepare() noexcept {
  process_table->state_->mutex.lock();
}

void permit_table::fork_parent() noexcept {
  process_table->state_->mutex.unlock();
}

void permit_table::fork_child() noexcept {
  state& s = *process_table->state_;
  s.monitor.release();  // its thread does not exist here; the object is leaked, never run
  s.head = s.tail = nullptr;
  s.waiting = s.paused = s.lent = 0;
  s.holders.clear();
  s.held = 0;
  s.drawn = 0;  // the parent's, given back by the parent
  if (s.source != nullptr) s.source->after_fork_child();
  s.kept_n = 0;
  if (this_thread.table == &s && this_thread.depth == 0) {  // a kept permit: not a task here
    this_thread.table = nullptr;
    this_thread.keep.store(detail::not_kept, std::memory_order_relaxed);
  }
  if (this_thread.table == &s) {
    s.holders.push_back(&this_thread);
    this_thread.tid = current_tid();
    if (this_thread.stage == holder_stage::holding) s.held = 1;
    if (this_thread.stage == holder_stage::paused) s.paused = 1;
    if (this_thread.stage == holder_stage::lent) {
      this_thread.stage = holder_stage::holding;
      s.held = 1;
    }
  }
  s.last_turnover = state::clock::now();
  new (&s.mutex) std::mutex;  // locked by the parent's prepare handler: start afresh
}

unsigned permit_table::permits() const noexcept {
  return state_->permits.load(std::memory_order_relaxed);
}

void permit_table::set_permits(unsigned permits) {
  if (permits < 1) throw std::invalid_argument("corral::permit_table: at least 1 permit");
  std::vector<waiter*> woken;
  {
    std::lock_guard<std::mutex> lock(state_->mutex);
    state& s = *state_;
    s.permits = permits;
    while (s.head != nullptr && s.held < s.permits) {  // more permits: hand them out now
      if (!s.source_allows_one_more_locked()) break;
      ++s.held;
      woken.push_back(s.give_back_locked());
    }
  }
  for (waiter* w : woken) wake(w);
}

namespace {

void become_holder(holder& h, permit_table::state& s) {
  if (h.tid == 0) h.tid = current_tid();
  h.table = &s;
  s.task_starts.fetch_add(1, std::memory_order_relaxed);
  h.depth = 1;
  h.pause_depth = 0;
  h.stage = holder_stage::holding;
  h.keep.store(detail::not_kept, std::memory_order_relaxed);
  h.generation.fetch_add(1, std::memory_order_relaxed);
  h.slice_start = permit_table::state::clock::now();
  s.holders.push_back(&h);  // may throw bad_alloc: callers undo their take
  try {
    s.ensure_monitor_locked();
  } catch (...) {  // no thread for the monitor: tasks run, unannounced waits just keep their permit
  }
}

// become_holder for a permit just taken under `lock`; when that fails (no memory) the permit goes
// back (to a waiter, woken after unlocking) and the error on.
void become_holder_or_give_back(holder& h, permit_table::state& s,
                                std::unique_lock<std::mutex>& lock) {
  try {
    become_holder(h, s);
  } catch (...) {
    waiter* w = s.give_back_locked();
    h.table = nullptr;
    lock.unlock();
    wake(w);
    throw;
  }
}

// Gives back the permit `h` keeps, if it still has it (under the mutex; returns whom to wake).
waiter* drop_kept_locked(holder& h, permit_table::state& s) noexcept {
  waiter* w = nullptr;
  if (s.take_kept_locked(&h)) w = s.give_back_locked();
  h.table = nullptr;
  h.keep.store(detail::not_kept, std::memory_order_relaxed);
  return w;
}

// The calling thread, between two tasks, lets go of the permit it keeps (given back, or already
// taken by another thread); afterwards it keeps nothing. Never throws.
void let_go_of_kept(holder& h) noexcept {
  if (h.table == nullptr || h.depth != 0) return;
  if (h.keep.load(std::memory_order_acquire) == detail::taken) {  // the table forgot us already
    h.table = nullptr;
    h.keep.store(detail::not_kept, std::memory_order_relaxed);
    return;
  }
  permit_table::state& s = *h.table;  // still alive: its destructor would have taken the permit
  waiter* w;
  {
    std::lock_guard<std::mutex> lock(s.mutex);
    w = drop_kept_locked(h, s);
  }
  wake(w);
}

// A thread between two tasks: takes its kept permit back (true), or, when another thread took it
// meanwhile or it belongs to another table, lets go of it (false: take one the usual way).
bool take_back_kept(holder& h, permit_table::state& s) {
  if (h.table == nullptr || h.depth != 0) return false;
  if (h.table == &s) {
    std::uint32_t expected = detail::kept;
    // acq_rel: pairs with take_kept_locked; the permit is this thread's again, still in `held`.
    if (h.keep.compare_exchange_strong(expected, detail::not_kept, std::memory_order_acq_rel)) {
      --s.kept_n;
      s.task_starts.fetch_add(1, std::memory_order_relaxed);
      h.depth = 1;
      h.generation.fetch_add(1, std::memory_order_relaxed);
      return true;
    }
    h.table = nullptr;  // taken: the table forgot this thread already
    h.keep.store(detail::not_kept, std::memory_order_relaxed);
    return false;
  }
  let_go_of_kept(h);  // another table's
  return false;
}

// Nested take by a holder: true. A holder of another table: logic_error.
bool nested(holder& h, permit_table::state& s) {
  if (take_back_kept(h, s)) return true;
  if (h.table == &s) {
    ++h.depth;
    return true;
  }
  if (h.table != nullptr)
    throw std::logic_error("corral::permit_table: this thread holds another table's permit");
  return false;
}

// Takes a permit for `h` (waiting when `may_wait`); false when it would have to wait.
bool take(holder& h, permit_table::state& s, bool may_wait) {
  if (nested(h, s)) return true;
  std::unique_lock<std::mutex> lock(s.mutex);
  if (!s.try_take_locked() && !s.take_over_kept_locked()) {
    if (!may_wait) return false;
    s.wait_locked(lock, false);
  }
  become_holder_or_give_back(h, s, lock);
  return true;
}

}  // namespace

void permit_table::acquire() {
  take(this_thread, *state_, true);
}

bool permit_table::try_acquire() {
  return take(this_thread, *state_, false);
}

void permit_table::release() noexcept {
  holder& h = this_thread;
  state& s = *state_;
  if (h.table != &s || h.depth == 0) return;
  if (--h.depth > 0) return;
  waiter* to_wake = nullptr;
  {
    std::lock_guard<std::mutex> lock(s.mutex);
    if (h.stage == holder_stage::holding) {
      const auto now = state::clock::now();
      if (s.may_keep_locked(h, now)) {  // kept for this thread's next task: no hand-over
        h.kept_since = now;
        ++s.kept_n;
        h.keep.store(detail::kept, std::memory_order_release);
        return;
      }
    }
    s.forget_holder_locked(&h);
    switch (h.stage) {
      case holder_stage::holding:
        to_wake = s.give_back_locked();
        break;
      case holder_stage::lent:  // the monitor gave it away already
        CORRAL_ASSERT(s.lent > 0);
        --s.lent;
        break;
      case holder_stage::paused:  // released inside a pause: already given back
        CORRAL_ASSERT(s.paused > 0);
        --s.paused;
        break;
    }
    h.table = nullptr;
  }
  wake(to_wake);
}

void permit_table::give_back_kept() noexcept {
  if (this_thread.table == state_.get()) let_go_of_kept(this_thread);
}

bool permit_table::held_by_this_thread() const noexcept {
  return this_thread.table == state_.get() && this_thread.depth > 0;
}

bool permit_table::alone() const noexcept {
  return state_->held.load(std::memory_order_relaxed) <= 1;
}

unsigned permit_table::running() const noexcept {
  const unsigned held = state_->held.load(std::memory_order_relaxed);
  const unsigned kept = state_->kept_n.load(std::memory_order_relaxed);
  return held > kept ? held - kept : 1;
}

unsigned permit_table::running_or_starting() const noexcept {
  return std::max(1u, state_->held.load(std::memory_order_relaxed));
}

permit_stats permit_table::stats() const noexcept {
  std::lock_guard<std::mutex> lock(state_->mutex);
  const state& s = *state_;
  CORRAL_ASSERT(s.count_waiters_locked() == s.waiting);  // the count matches the FIFO
  permit_stats out;
  out.permits = s.permits;
  out.held = s.held;
  out.waiting = s.waiting;
  out.returning = s.count_returning_locked();
  out.paused = s.paused;
  out.lent = s.lent;
  out.kept = s.kept_n;
  out.holders = static_cast<unsigned>(s.holders.size()) -
                std::min(out.kept, static_cast<unsigned>(s.holders.size()));
  out.acquires = s.acquires;
  out.waits = s.waits;
  out.lends = s.lends;
  out.overdrafts = s.overdrafts;
  out.idle_admissions = s.idle_admissions;
  out.sourced = s.source != nullptr;
  out.drawn = s.drawn;
  return out;
}

void permit_table::state::ensure_monitor_locked() {
  if (!monitor_wanted || (monitor != nullptr && !monitor->exited())) return;
  monitor.reset();  // a thread that ended by itself: joined at once (it holds nothing of ours)
  monitor = std::make_unique<detail::permit_monitor>(*this);
}

void permit_table::set_wait_monitor(bool on) {
  std::unique_ptr<detail::permit_monitor> stopped;
  {
    std::lock_guard<std::mutex> lock(state_->mutex);
    state_->monitor_wanted = on;
    if (on) {
      state_->ensure_monitor_locked();
      return;
    }
    stopped = std::move(state_->monitor);
  }
  stopped.reset();  // joins its thread, outside the lock it takes
}

void permit_table::end_idle_monitor() {
  std::unique_ptr<detail::permit_monitor> ended;
  {
    std::lock_guard<std::mutex> lock(state_->mutex);
    if (!state_->holders.empty() || state_->head != nullptr) return;
    // monitor_wanted stays: the next holder's ensure_monitor_locked starts another
    ended = std::move(state_->monitor);
  }
  ended.reset();  // joins its thread, outside the lock it takes
}

bool permit_table::wait_monitor_on() const noexcept {
  std::lock_guard<std::mutex> lock(state_->mutex);
  return state_->monitor_wanted;
}

// -- permit_pause
// -----------------------------------------------------------------------------------

bool permit_pause::in_task() noexcept {
  return this_thread.table != nullptr && this_thread.depth > 0 && this_thread.short_wait_depth == 0;
}

permit_pause::permit_pause() noexcept {
  holder& h = this_thread;
  if (h.table == nullptr || h.short_wait_depth > 0) return;
  if (h.depth == 0) {  // between tasks, about to wait: the kept permit goes to who can use it
    let_go_of_kept(h);
    return;
  }
  paused_ = h.table;
  if (h.pause_depth++ > 0) return;
  waiter* to_wake = nullptr;
  {
    std::lock_guard<std::mutex> lock(paused_->mutex);
    if (h.stage == holder_stage::holding) to_wake = paused_->give_back_locked();
    if (h.stage == holder_stage::lent) {
      CORRAL_ASSERT(paused_->lent > 0);
      --paused_->lent;
    }
    h.stage = holder_stage::paused;
    ++paused_->paused;
  }
  wake(to_wake);
}

permit_pause::~permit_pause() {
  if (paused_ == nullptr) return;
  holder& h = this_thread;
  if (--h.pause_depth > 0) return;
  std::unique_lock<std::mutex> lock(paused_->mutex);
  CORRAL_ASSERT(paused_->paused > 0);
  --paused_->paused;
  if (!paused_->try_take_locked() && !paused_->take_over_kept_locked())
    paused_->wait_locked(lock, true);  // returners go first
  h.stage = holder_stage::holding;
  h.generation.fetch_add(1, std::memory_order_relaxed);
}

// -- short_waits
// ------------------------------------------------------------------------------------------

short_waits::short_waits() noexcept {
  ++this_thread.short_wait_depth;
}

short_waits::~short_waits() {
  --this_thread.short_wait_depth;
}

// -- holder
// -------------------------------------------------------------------------------------------

detail::holder::~holder() {
  let_go_of_kept(*this);  // keeps nothing, or ends inside a task: nothing to do
}

}  // namespace corral
