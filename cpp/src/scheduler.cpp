// The scheduler: worker threads, slots, work stealing, parking, blocking hand-over, fork safety.
// docs/scheduler.md describes the design; the comments here say why each step is safe.
#include "corral/scheduler.hpp"

#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "assert.hpp"
#include "corral/blocking.hpp"
#include "corral/budget.hpp"
#include "fence.hpp"
#include "scheduler_state.hpp"
#include "stack_headroom.hpp"
#include "wait_monitor.hpp"

namespace corral {

using detail::task;
using detail::worker;

namespace detail {
namespace {
thread_local thread_state tls_state;
}  // namespace
thread_state& this_thread() noexcept {
  return tls_state;
}

int create_thread_without_async_signals(pthread_t* thread, const pthread_attr_t* attributes,
                                        void* (*entry)(void*), void* arg) noexcept {
  sigset_t all, previous;
  sigfillset(&all);
  for (int sync_signal : {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP, SIGABRT})
    sigdelset(&all, sync_signal);
  pthread_sigmask(SIG_SETMASK, &all, &previous);  // the new thread inherits the mask
  int rc = pthread_create(thread, attributes, entry, arg);
  pthread_sigmask(SIG_SETMASK, &previous, nullptr);
  return rc;
}
}  // namespace detail

namespace {

using detail::this_thread;

// Spinning before sleeping: a worker that runs out of work keeps looking for a few tens of
// microseconds (first pausing, then yielding the CPU to whoever wants it), so that bursts of work
// find it awake; after that it sleeps and costs nothing.
constexpr unsigned pause_rounds = 32;
constexpr unsigned yield_rounds = 32;
constexpr unsigned pauses_per_round = 16;

// How long a thread that holds no slot (an outside thread, or a worker in a blocking scope) keeps
// checking, yielding the CPU in between, before it sleeps in a wait.
constexpr auto external_spin = std::chrono::microseconds(50);

void backoff(unsigned round) noexcept {
  if (round < pause_rounds) {
    for (unsigned i = 0; i < pauses_per_round; ++i) detail::cpu_relax();
  } else {
    sched_yield();
  }
}

std::uint64_t next_random(std::uint64_t& s) noexcept {  // xorshift64
  s ^= s << 13;
  s ^= s >> 7;
  s ^= s << 17;
  return s;
}

void bump(std::atomic<std::uint64_t>& counter) noexcept {  // single writer: no RMW needed
  counter.store(counter.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
}

constexpr std::size_t default_stack_size = std::size_t{64} << 20;

pid_t kernel_thread_id() noexcept {
  thread_local const pid_t id = static_cast<pid_t>(::syscall(SYS_gettid));
  return id;
}

void* worker_entry(void* arg) {
  auto* w = static_cast<worker*>(arg);
  w->owner.run_worker(*w);
  return nullptr;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Construction, threads.

scheduler::state::state(scheduler& owner, options o) : self(owner), opts(std::move(o)) {
  unsigned n = opts.slots != 0 ? opts.slots : scheduler::default_slots();
  max_threads = opts.max_threads != 0 ? opts.max_threads : std::max(256u, 4 * n);
  if (max_threads < n)
    throw std::invalid_argument("corral::scheduler: max_threads (" + std::to_string(max_threads) +
                                ") is below slots (" + std::to_string(n) + ")");
  // Threads use at most max_threads records; outside helpers hold slots, so at most max_threads
  // more.
  record_capacity = 2 * max_threads;
  slots.store(n, std::memory_order_relaxed);
  free_slots.store(static_cast<int>(n), std::memory_order_relaxed);
  observer.store(opts.observer, std::memory_order_relaxed);
  workers.reset(new std::atomic<detail::worker*>[record_capacity]);
  for (unsigned i = 0; i < record_capacity; ++i)
    workers[i].store(nullptr, std::memory_order_relaxed);
  worker_storage.reset(new std::unique_ptr<detail::worker>[record_capacity]);
}

scheduler::state::~state() = default;

worker* scheduler::state::claim_record_locked() {
  for (unsigned i = 0; i < record_capacity; ++i) {
    worker* candidate = workers[i].load(std::memory_order_relaxed);
    if (candidate == nullptr) {
      worker_storage[i] = std::make_unique<worker>(*this, i);
      worker* w = worker_storage[i].get();
      w->alive.store(true, std::memory_order_relaxed);
      workers[i].store(w, std::memory_order_release);
      if (high_water.load(std::memory_order_relaxed) < i + 1)
        high_water.store(i + 1, std::memory_order_release);
      return w;
    }
    if (!candidate->alive.load(std::memory_order_acquire)) {
      if (candidate->joinable) {  // its previous thread retired; reap it (it is at most finishing
                                  // its return)
        pthread_join(candidate->thread, nullptr);
        candidate->joinable = false;
      }
      candidate->alive.store(true, std::memory_order_relaxed);
      return candidate;
    }
  }
  return nullptr;
}

bool scheduler::state::start_thread_locked() {
  if (stopping.load(std::memory_order_relaxed)) return false;
  if (threads.load(std::memory_order_relaxed) >= max_threads) return false;
  worker* w = claim_record_locked();
  if (w == nullptr) return false;

  pthread_attr_t attributes;
  pthread_attr_init(&attributes);
  pthread_attr_setstacksize(&attributes,
                            opts.stack_size != 0 ? opts.stack_size : default_stack_size);
  unsigned now = threads.fetch_add(1, std::memory_order_relaxed) + 1;
  int rc = detail::create_thread_without_async_signals(&w->thread, &attributes, &worker_entry, w);
  pthread_attr_destroy(&attributes);
  if (rc != 0) {
    threads.fetch_sub(1, std::memory_order_relaxed);
    w->alive.store(false, std::memory_order_relaxed);
    return false;
  }
  w->joinable = true;
  // spawn_mutex is held: the only writer, as for high_water.
  if (peak_threads.load(std::memory_order_relaxed) < now)
    peak_threads.store(now, std::memory_order_relaxed);
  return true;
}

void scheduler::state::start_spare() noexcept {
  try {
    std::lock_guard<std::mutex> lock(spawn_mutex);
    // Re-check under the lock: someone else may have started one, or a worker may have woken.
    if (start_thread_locked()) spares_started.fetch_add(1, std::memory_order_relaxed);
  } catch (...) {  // out of memory for a thread record: the existing workers will get to the work
  }
}

void scheduler::state::run_worker(worker& w) {
  detail::thread_state& me = this_thread();
  me = {this, &w, false, false};
  w.tid.store(kernel_thread_id(), std::memory_order_relaxed);
  {
    char name[16];
    std::snprintf(name, sizeof name, "corral-%u", w.index);
    pthread_setname_np(pthread_self(), name);
  }
  bool retired = false;
  for (;;) {
    if (!me.has_slot && !wait_for_slot_and_work(w, retired)) break;
    task* t = find_task(w);
    if (t == nullptr) t = search(w);
    if (t == nullptr) {  // nothing anywhere: give the slot back and go to sleep
      release_slot();
      continue;
    }
    execute(w, t);
    // A task boundary: give the slot to a returning blocked thread, or shed it after set_slots
    // shrank.
    if (should_yield()) release_slot();
  }
  if (retired) {
    // Nobody will join a retired spare (the global scheduler is never destroyed): detach. The
    // destructor waits for `alive` to drop instead; after that store this thread touches nothing of
    // ours.
    std::lock_guard<std::mutex> lock(spawn_mutex);
    if (w.joinable) {
      pthread_detach(w.thread);
      w.joinable = false;
    }
  } else {
    threads.fetch_sub(1, std::memory_order_relaxed);
  }
  me = {};
  w.alive.store(false, std::memory_order_release);
}

// Sleeps until there is work and a slot for it; returns true holding a slot. Returns false when the
// scheduler stops or this thread retires (a spare, idle for options::spare_idle).
bool scheduler::state::wait_for_slot_and_work(worker& w, bool& retired) {
  detail::thread_state& me = this_thread();
  for (;;) {
    if (stopping.load(std::memory_order_acquire)) return false;
    if (work_available() && try_acquire_slot(false)) {
      me.has_slot = true;
      return true;
    }
    std::uint32_t key = work_ec.prepare_wait();
    // Re-check after announcing ourselves: a push or slot release that our first check missed has
    // now either become visible here or will see us as a waiter and bump the epoch
    // (event_count.hpp).
    if (stopping.load(std::memory_order_acquire) || (slot_free_for_new() && work_available())) {
      work_ec.cancel_wait();
      wake_pending.store(0, std::memory_order_relaxed);
      continue;
    }
    bump(w.parks);
    if (surplus_threads()) {
      bool notified = work_ec.commit_wait_for(key, opts.spare_idle);
      wake_pending.store(0, std::memory_order_relaxed);
      if (!notified) {
        unsigned n = threads.load(std::memory_order_relaxed);
        while (surplus_threads()) {
          if (threads.compare_exchange_weak(n, n - 1, std::memory_order_relaxed)) {
            retired = true;
            return false;
          }
        }
      }
    } else {
      work_ec.commit_wait(key);
      wake_pending.store(0, std::memory_order_relaxed);
    }
  }
}

bool scheduler::state::surplus_threads() const noexcept {
  return threads.load(std::memory_order_relaxed) > slots.load(std::memory_order_relaxed) +
                                                       blocked.load(std::memory_order_relaxed) +
                                                       returners.load(std::memory_order_relaxed);
}

// ---------------------------------------------------------------------------------------------
// Finding and running tasks.

task* scheduler::state::find_task(worker& w) {
  if (task* t = w.deque.pop()) return t;
  if (injected_size.load(std::memory_order_relaxed) != 0) {
    if (task* t = take_injected(w)) return t;
  }
  return steal(w);
}

// Takes one injected task, and moves a few more to our own deque where other workers can steal them
// without the lock.
task* scheduler::state::take_injected(worker& w) {
  task* first = nullptr;
  std::size_t moved = 0;
  {
    std::lock_guard<std::mutex> lock(inject_mutex);
    if (injected.empty()) return nullptr;
    first = injected.front();
    injected.pop_front();
    std::size_t extra = std::min<std::size_t>(15, injected.size() / 2);
    for (; moved < extra; ++moved) {
      w.deque.push(injected.front());
      injected.pop_front();
    }
    injected_size.store(injected.size(), std::memory_order_relaxed);
  }
  if (moved != 0) wake_one_if_useful();
  return first;
}

task* scheduler::state::steal(worker& w) {
  unsigned n = high_water.load(std::memory_order_acquire);
  if (n <= 1) return nullptr;
  unsigned start = static_cast<unsigned>(next_random(w.rng) % n);
  for (unsigned i = 0; i < n; ++i) {
    unsigned index = start + i < n ? start + i : start + i - n;
    if (index == w.index) continue;
    worker* victim = workers[index].load(std::memory_order_acquire);
    if (victim == nullptr) continue;
    for (int attempt = 0; attempt < 4; ++attempt) {
      task* t = nullptr;
      auto result = victim->deque.steal(t);
      if (result == detail::chase_lev_deque<task*>::steal_result::success) {
        bump(w.steals);
        return t;
      }
      if (result == detail::chase_lev_deque<task*>::steal_result::empty) break;
    }
  }
  return nullptr;
}

// Spins for a while looking for work, counted in `searching` so that pushers need not wake anyone
// while a searcher will find their work anyway (as in Go's scheduler).
task* scheduler::state::search(worker& w) {
  searching.fetch_add(1, std::memory_order_seq_cst);
  for (unsigned round = 0; round < pause_rounds + yield_rounds; ++round) {
    if (should_yield() || stopping.load(std::memory_order_relaxed)) break;
    if (task* t = find_task(w)) {
      // The last searcher leaving: wake another in case there is more (the wake propagates).
      if (searching.fetch_sub(1, std::memory_order_seq_cst) == 1) wake_one_if_useful();
      return t;
    }
    backoff(round);
  }
  searching.fetch_sub(1, std::memory_order_seq_cst);
  return nullptr;
}

void scheduler::state::execute(worker& w, task* t) noexcept {
  task_observer* watcher = observer.load(std::memory_order_relaxed);
  if (watcher != nullptr) watcher->on_task_start(self);
  ++w.task_depth;
  if (monitoring()) arm(w);
  t->execute(t);
  // A task boundary: if the monitor lent our slot while the task slept, take one back (as a
  // returner).
  settle(disarm(w));
  --w.task_depth;
  if (watcher != nullptr) watcher->on_task_end(self);
  bump(w.tasks_run);
}

bool scheduler::state::work_available() const noexcept {
  if (injected_size.load(std::memory_order_relaxed) != 0) return true;
  unsigned n = high_water.load(std::memory_order_acquire);
  for (unsigned i = 0; i < n; ++i) {
    worker* w = workers[i].load(std::memory_order_acquire);
    if (w != nullptr && !w->deque.empty_hint()) return true;
  }
  return false;
}

// ---------------------------------------------------------------------------------------------
// Pushing work and waking workers.
//
// Two kinds of wake-up:
//  * strict (notify_work_strict): after a push by a thread that holds no slot (an outside thread,
//  or
//    a worker inside a blocking scope), and after a slot is released. Nobody else may be awake to
//    see the work, so we must not lose the wake-up: seq_cst fence, then look for sleepers
//    (event_count.hpp has the argument).
//  * best effort (wake_one_if_useful): after a push by a worker that holds a slot. That worker will
//    run the task itself if nobody steals it (it only sleeps once its own deque is empty, and it
//    re-checks for work whenever it gives its slot away), so a missed wake costs parallelism for a
//    moment, never progress. This keeps the hot path free of fences: a few relaxed loads, and a
//    wake only when a sleeper exists, nobody is searching, no wake is already on its way, and a
//    slot is free.

void scheduler::state::push(task* t) {
  detail::thread_state& me = this_thread();
  if (me.state == this && me.self != nullptr) {
    me.self->deque.push(t);
    if (me.has_slot)
      wake_one_if_useful();
    else
      notify_work_strict();
    return;
  }
  inject(t);
  notify_work_strict();
}

void scheduler::state::inject(task* t) {
  std::lock_guard<std::mutex> lock(inject_mutex);
  injected.push_back(t);
  injected_size.store(injected.size(), std::memory_order_relaxed);
}

void scheduler::state::wake_one_if_useful() noexcept {
  if (work_ec.waiters() == 0) return;
  if (searching.load(std::memory_order_relaxed) != 0) return;
  if (wake_pending.load(std::memory_order_relaxed) != 0) return;
  if (!slot_free_for_new()) return;
  if (wake_pending.exchange(1, std::memory_order_relaxed) == 0) work_ec.notify_one();
}

void scheduler::state::notify_work_strict() noexcept {
  detail::seq_cst_fence();
  wake_for_free_slot();
}

void scheduler::state::wake_for_free_slot() noexcept {
  if (!slot_free_for_new())
    return;  // every slot is taken: its holder finds the work at its next boundary
  if (work_ec.waiters() != 0) {
    work_ec.notify_one();
    return;
  }
  // Free slot, nobody asleep: normally a worker is searching. If fewer threads than slots are able
  // to run (the others blocked in scopes or waits, or retired), start one.
  if (able_threads() < slots.load(std::memory_order_relaxed) &&
      searching.load(std::memory_order_relaxed) == 0)
    start_spare();
}

// ---------------------------------------------------------------------------------------------
// Slots.

bool scheduler::state::try_acquire_slot(bool returning) noexcept {
  // Returning threads go first: others leave as many free slots as there are returners.
  int keep = returning ? 0 : static_cast<int>(returners.load(std::memory_order_relaxed));
  int free = free_slots.load(std::memory_order_relaxed);
  while (free > keep) {
    if (free_slots.compare_exchange_weak(free, free - 1, std::memory_order_acquire,
                                         std::memory_order_relaxed)) {
      // The monitor sleeps while no slot is held; a slot taken means a task may soon run (strict
      // wake: event_count's fence orders our CAS before its look at the monitor's waiter count).
      if (monitoring()) wake_monitor();
      return true;
    }
  }
  return false;
}

void scheduler::state::release_slot() noexcept {
  this_thread().has_slot = false;
  give_back_slot();
}

// Every release, whoever makes it (a worker with nothing to do, a blocking scope, an outside helper
// leaving, the wait monitor lending), ends the same way: if work waits, a sleeper or a spare takes
// the slot. The releasing thread cannot know whether anyone else is able to; the counters can.
void scheduler::state::give_back_slot() noexcept {
  free_slots.fetch_add(1, std::memory_order_seq_cst);
  if (returners.load(std::memory_order_seq_cst) != 0) {
    slot_ec.notify_all();  // a returner takes it (they wait on slot_ec, not work_ec)
    return;
  }
  detail::seq_cst_fence();  // strict (see above): the release, then the look at the work and
                            // sleepers
  if (work_available()) wake_for_free_slot();
}

void scheduler::state::enter_blocking() noexcept {
  detail::thread_state& me = this_thread();
  std::uint32_t stage = disarm(*me.self);
  if (stage == detail::lent) {  // the monitor gave our slot away already: the scope takes that over
    [[maybe_unused]] unsigned lent_before = lent_now.fetch_sub(1, std::memory_order_relaxed);
    CORRAL_ASSERT(lent_before > 0);
    me.has_slot = false;
    return;
  }
  settle(stage);
  CORRAL_ASSERT(me.has_slot);  // only a slot holder enters a blocking scope (settled: it holds one)
  me.has_slot = false;
  count_blocked_and_give_back_slot();
}

void scheduler::state::leave_blocking() noexcept {
  count_returner();
  wait_as_returner();
}

void scheduler::state::count_blocked_and_give_back_slot() noexcept {
  blocked.fetch_add(1, std::memory_order_relaxed);
  give_back_slot();
}

void scheduler::state::count_returner() noexcept {
  // Announce first, so that slot holders yield at their next boundary and sleepers leave us a slot.
  returners.fetch_add(1, std::memory_order_seq_cst);
  [[maybe_unused]] unsigned blocked_before = blocked.fetch_sub(1, std::memory_order_relaxed);
  CORRAL_ASSERT(blocked_before > 0);
}

void scheduler::state::count_returned() noexcept {
  [[maybe_unused]] unsigned returners_before = returners.fetch_sub(1, std::memory_order_seq_cst);
  CORRAL_ASSERT(returners_before > 0);
  // A slot freed while we were registered went to us; if more are free, let a sleeper use them.
  notify_work_strict();
}

void scheduler::state::wait_as_returner() noexcept {
  for (;;) {
    if (try_acquire_slot(true)) break;
    std::uint32_t key = slot_ec.prepare_wait();
    if (free_slots.load(std::memory_order_relaxed) > 0) {
      slot_ec.cancel_wait();
      continue;
    }
    slot_ec.commit_wait(key);
  }
  this_thread().has_slot = true;
  count_returned();
}

// ---------------------------------------------------------------------------------------------
// Lending a sleeping task's slot (the worker's side; the monitor's is in wait_monitor.cpp).
//
// The worker arms its record as a task starts and disarms it before anything that touches its slot
// (the task's end, a wait, a blocking scope). Disarming is a CAS out of a stable stage (waiting
// while the monitor is `busy` with it), so exactly one side settles each lend: if the stage was
// `lent`, the monitor released the slot and counted us blocked, and we come back as a returner; if
// `reclaiming`, the monitor already counted us as a returner and we wait for the slot. The CAS
// acquires the monitor's release store of the stage, so its counter updates are visible to what we
// do next.

void scheduler::state::arm(worker& w) noexcept {
  w.arm_count.store(w.arm_count.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  // Only from not_armed: a lend not yet settled stays for the next disarm. Release publishes
  // arm_count.
  std::uint32_t expected = detail::not_armed;
  w.lend_state.compare_exchange_strong(expected, detail::armed, std::memory_order_release,
                                       std::memory_order_relaxed);
}

std::uint32_t scheduler::state::disarm(worker& w) noexcept {
  std::uint32_t stage = w.lend_state.load(std::memory_order_relaxed);
  if (stage == detail::not_armed) return stage;  // the common case: one relaxed load
  unsigned spins = 0;
  for (;;) {
    if (stage ==
        detail::busy) {  // the monitor is mid-transition: it finishes in a few instructions
      if (++spins < 64)
        detail::cpu_relax();
      else
        sched_yield();
      stage = w.lend_state.load(std::memory_order_relaxed);
      continue;
    }
    if (w.lend_state.compare_exchange_weak(stage, detail::not_armed, std::memory_order_acquire,
                                           std::memory_order_relaxed))
      return stage;
  }
}

void scheduler::state::settle(std::uint32_t stage) noexcept {
  if (stage == detail::lent || stage == detail::reclaiming) {
    [[maybe_unused]] unsigned lent_before = lent_now.fetch_sub(1, std::memory_order_relaxed);
    CORRAL_ASSERT(lent_before > 0);
  }
  if (stage == detail::lent) {
    leave_blocking();
  } else if (stage == detail::reclaiming) {
    wait_as_returner();
  }
}

void scheduler::state::rearm_if_in_task() noexcept {
  detail::thread_state& me = this_thread();
  if (me.has_slot && me.self->task_depth != 0 && monitoring()) arm(*me.self);
}

void scheduler::state::wake_monitor() noexcept {
  monitor_ec.notify_one();
}

// ---------------------------------------------------------------------------------------------
// Waiting for a task group or an event.

bool scheduler::state::help_until(detail::waitable& w,
                                  const std::chrono::steady_clock::time_point* deadline) {
  detail::thread_state& thread = this_thread();
  worker& me = *thread.self;
  // A wait is announced: the monitor must not lend our slot meanwhile (and a lend made while the
  // task slept is settled first: we take a slot back before running anything).
  settle(disarm(me));
  struct rearm_on_exit {
    scheduler::state& s;
    ~rearm_on_exit() { s.rearm_if_in_task(); }
  } rearm{*this};
  unsigned idle = 0;
  // Tasks run here nest on this thread's stack: with too little left, only wait.
  const bool may_run_tasks = detail::stack_headroom() >= detail::min_stack_headroom;
  while (!w.ready()) {
    if (deadline != nullptr && std::chrono::steady_clock::now() >= *deadline) return false;
    if (may_run_tasks && !should_yield()) {
      if (task* t = find_task(me)) {
        execute(me, t);
        idle = 0;
        continue;
      }
      if (idle < pause_rounds + yield_rounds) {
        backoff(idle++);
        continue;
      }
    }
    if (thread.temporary) {
      // An outside thread helping: it gives the slot back for good (no returning for it) and waits
      // as outside threads do. Work it leaves behind (its stack ran short) goes with the slot.
      release_slot();
      return w.sleep(deadline);
    }
    // Nothing to run (or a returning thread wants our slot): sleep with the slot handed over.
    blocking_scope scope;
    return w.sleep(deadline);
  }
  return true;
}

// An outside thread becomes a worker for the length of a wait: a free slot (never more than the
// slots: the same CAS as a parked worker's, leaving returners theirs) and a record of its own, so
// that what it spawns goes to its own deque and can be stolen.
bool scheduler::state::join_as_temporary_worker() noexcept {
  if (stopping.load(std::memory_order_relaxed) || !try_acquire_slot(false)) return false;
  worker* w = nullptr;
  try {
    std::lock_guard<std::mutex> lock(spawn_mutex);
    w = claim_record_locked();
  } catch (...) {  // out of memory for a record
  }
  if (w == nullptr) {
    give_back_slot();
    return false;
  }
  w->tid.store(kernel_thread_id(), std::memory_order_relaxed);
  this_thread() = {this, w, true, true};
  outside_helps.fetch_add(1, std::memory_order_relaxed);
  return true;
}

void scheduler::state::leave_as_temporary_worker() noexcept {
  detail::thread_state& me = this_thread();
  worker& w = *me.self;
  settle(disarm(w));  // cannot be armed here (no task runs), but keep the record clean
  // Tasks still in our deque (spawned by tasks we ran, for groups we did not wait for) go to the
  // injection queue, where the workers find them; release_slot below wakes one (strict).
  bool moved = false;
  while (task* t = w.deque.pop()) {
    try {
      inject(t);
      moved = true;
    } catch (...) {  // no memory to move it: run it here rather than lose it
      execute(w, t);
    }
  }
  bool had_slot = me.has_slot;
  me = {};
  w.tid.store(0, std::memory_order_relaxed);
  w.alive.store(false, std::memory_order_release);  // the record may be reused from here on
  if (had_slot)
    give_back_slot();
  else if (moved)
    notify_work_strict();
}

namespace detail {

bool wait_for(waitable& w, const std::chrono::steady_clock::time_point* deadline,
              scheduler* owner) {
  if (w.ready()) return true;
  thread_state& me = this_thread();
  if (me.state != nullptr && me.has_slot) return me.state->help_until(w, deadline);
  if (owner != nullptr && me.state == nullptr) {
    // An outside thread: run the work itself if a slot is free (as oneTBB's calling thread does).
    outside_worker helper(*owner);
    if (helper.joined()) return me.state->help_until(w, deadline);
  }
  // Not running tasks here (no slot). Short waits are common (a parallel_for of a few microseconds
  // from the main thread), and a futex sleep + wake costs tens of microseconds, so first spin
  // briefly, then yield the CPU for up to external_spin, and only then sleep.
  for (int i = 0; i < 256; ++i) {
    if (w.ready()) return true;
    cpu_relax();
  }
  auto spin_until = std::chrono::steady_clock::now() + external_spin;
  if (deadline != nullptr && *deadline < spin_until) spin_until = *deadline;
  while (std::chrono::steady_clock::now() < spin_until) {
    if (w.ready()) return true;
    sched_yield();
  }
  return w.sleep(deadline);
}

bool local_queue_empty() noexcept {
  const thread_state& me = this_thread();
  return me.self == nullptr || me.self->deque.empty_hint();
}

bool holds_slot() noexcept {
  return this_thread().has_slot;
}

bool work_wanted() noexcept {
  const thread_state& me = this_thread();
  if (me.state == nullptr) return false;
  // Relaxed: a hint. Missing a searcher that has just started costs one chunk of delay; the
  // splitting side checks again after every chunk.
  return me.state->searching.load(std::memory_order_relaxed) != 0 ||
         me.state->free_slots.load(std::memory_order_relaxed) >
             static_cast<int>(me.state->returners.load(std::memory_order_relaxed));
}

const void* current_worker() noexcept {
  return this_thread().self;
}

outside_worker::outside_worker(scheduler& s) noexcept : scheduler_(&s) {
  if (this_thread().state != nullptr) return;  // a worker already (of s or of another scheduler)
  joined_ = s.state_->join_as_temporary_worker();
}

outside_worker::~outside_worker() {
  // After fork() in a child, the thread state was reset: the parent's scheduler is not ours to
  // touch.
  if (joined_ && this_thread().state == scheduler_->state_.get())
    scheduler_->state_->leave_as_temporary_worker();
}

}  // namespace detail

// ---------------------------------------------------------------------------------------------
// The public face.

scheduler::scheduler() : scheduler(options{}) {}

scheduler::scheduler(options opts) : state_(std::make_unique<state>(*this, std::move(opts))) {
  std::lock_guard<std::mutex> lock(state_->spawn_mutex);
  // A constructor that fails stops and joins the threads it started (no destructor will run).
  auto stop_and_join = [this] {
    state_->stopping.store(true);
    state_->work_ec.notify_all();
    for (unsigned i = 0; i < state_->record_capacity; ++i)
      if (state_->worker_storage[i] && state_->worker_storage[i]->joinable)
        pthread_join(state_->worker_storage[i]->thread, nullptr);
  };
  unsigned n = state_->slots.load(std::memory_order_relaxed);
  for (unsigned i = 0; i < n; ++i) {
    if (!state_->start_thread_locked()) {
      stop_and_join();
      throw std::system_error(std::make_error_code(std::errc::resource_unavailable_try_again),
                              "corral::scheduler: cannot start worker threads");
    }
  }
  if (state_->opts.monitor_waits) {
    try {
      set_wait_monitor(true);
    } catch (...) {
      stop_and_join();
      throw;
    }
  }
}

scheduler::~scheduler() {
  state& s = *state_;
  if (this_thread().state == &s) {
    std::fputs("corral: a scheduler cannot be destroyed by one of its own worker threads\n",
               stderr);
    std::terminate();
  }
  // The monitor first: it reads the worker records and may release slots.
  set_wait_monitor(false);
  // Drain: every detached task (and what it spawned into groups it waits for) finishes first.
  while (s.detached_pending.load(std::memory_order_acquire) != 0) {
    std::uint32_t key = s.drain_ec.prepare_wait();
    if (s.detached_pending.load(std::memory_order_acquire) == 0) {
      s.drain_ec.cancel_wait();
      break;
    }
    s.drain_ec.commit_wait(key);
  }
  s.stopping.store(true, std::memory_order_seq_cst);
  s.work_ec.notify_all();
  s.slot_ec.notify_all();
  std::vector<pthread_t> to_join;
  {
    std::lock_guard<std::mutex> lock(s.spawn_mutex);  // no thread starts after stopping is set
    for (unsigned i = 0; i < s.record_capacity; ++i) {
      worker* w = s.worker_storage[i].get();
      if (w != nullptr && w->joinable) {
        to_join.push_back(w->thread);
        w->joinable = false;
      }
    }
  }
  for (pthread_t t : to_join) pthread_join(t, nullptr);
  // Retired spares detached themselves; wait until the last of them has left our memory.
  for (unsigned i = 0; i < s.record_capacity; ++i) {
    worker* w = s.worker_storage[i].get();
    while (w != nullptr && w->alive.load(std::memory_order_acquire)) std::this_thread::yield();
  }
}

unsigned scheduler::default_slots() {
  // The one place that decides the default: the process's CPU budget (budget.hpp).
  budget_options options;
  options.with_topology = false;
  return static_cast<unsigned>(std::max(1, read_budget(options).cpus));
}

scheduler* scheduler::current() noexcept {
  scheduler::state* s = this_thread().state;
  return s != nullptr ? &s->self : nullptr;
}

void scheduler::spawn(detail::task* t) {
  state_->push(t);
}

unsigned scheduler::slots() const noexcept {
  return state_->slots.load(std::memory_order_relaxed);
}
unsigned scheduler::max_threads() const noexcept {
  return state_->max_threads;
}

unsigned scheduler::running() const noexcept {
  int held = static_cast<int>(state_->slots.load(std::memory_order_relaxed)) -
             state_->free_slots.load(std::memory_order_relaxed);
  return held > 0 ? static_cast<unsigned>(held) : 0;
}

void scheduler::set_slots(unsigned n) {
  state& s = *state_;
  if (n == 0) throw std::invalid_argument("corral::scheduler::set_slots: slots must be at least 1");
  if (n > s.max_threads)
    throw std::invalid_argument("corral::scheduler::set_slots: " + std::to_string(n) +
                                " slots exceed max_threads (" + std::to_string(s.max_threads) +
                                ")");
  std::lock_guard<std::mutex> lock(s.spawn_mutex);
  unsigned old = s.slots.exchange(n, std::memory_order_seq_cst);
  s.free_slots.fetch_add(static_cast<int>(n) - static_cast<int>(old), std::memory_order_seq_cst);
  if (n > old) {
    // Enough threads to fill the new slots, then wake whoever can use them.
    while (s.threads.load() - s.blocked.load() - s.returners.load() < n &&
           s.start_thread_locked()) {
    }
    s.slot_ec.notify_all();
    s.work_ec.notify_all();
  }
  // Fewer slots: holders over the limit see should_yield() at their next task boundary.
}

void scheduler::set_observer(task_observer* observer) noexcept {
  state_->observer.store(observer, std::memory_order_relaxed);
}

void scheduler::set_wait_monitor(bool on) {
  state& s = *state_;
  if (s.monitor_on.load(std::memory_order_relaxed) == on)
    return;  // the common call: nothing changes
  std::unique_ptr<detail::wait_monitor> stopped;
  {
    std::lock_guard<std::mutex> lock(s.monitor_mutex);
    if (on) {
      if (s.monitor != nullptr) return;
      // starts its thread; throws if it cannot
      s.monitor = std::make_unique<detail::wait_monitor>(s);
      s.monitor_on.store(true, std::memory_order_seq_cst);
      return;
    }
    s.monitor_on.store(false, std::memory_order_seq_cst);
    stopped = std::move(s.monitor);
  }
  stopped.reset();  // joins the monitor thread (outside the lock); lent slots settle at boundaries
}

bool scheduler::wait_monitor_on() const noexcept {
  return state_->monitor_on.load(std::memory_order_relaxed);
}

scheduler::stats_t scheduler::stats() const noexcept {
  const state& s = *state_;
  stats_t out;
  out.slots = s.slots.load(std::memory_order_relaxed);
  out.running = running();
  out.blocked = s.blocked.load(std::memory_order_relaxed);
  out.returning = s.returners.load(std::memory_order_relaxed);
  out.threads = s.threads.load(std::memory_order_relaxed);
  out.spares = out.threads > out.slots ? out.threads - out.slots : 0;
  out.parked = s.work_ec.waiters();
  out.peak_threads = s.peak_threads.load(std::memory_order_relaxed);
  out.max_threads = s.max_threads;
  out.spares_started = s.spares_started.load(std::memory_order_relaxed);
  out.lent = s.lent_now.load(std::memory_order_relaxed);
  out.lends = s.lends.load(std::memory_order_relaxed);
  out.outside_helps = s.outside_helps.load(std::memory_order_relaxed);
  unsigned n = s.high_water.load(std::memory_order_acquire);
  for (unsigned i = 0; i < n; ++i) {
    const worker* w = s.workers[i].load(std::memory_order_acquire);
    if (w == nullptr) continue;
    out.tasks_run += w->tasks_run.load(std::memory_order_relaxed);
    out.steals += w->steals.load(std::memory_order_relaxed);
    out.parks += w->parks.load(std::memory_order_relaxed);
  }
  return out;
}

void scheduler::count_detached_task() noexcept {
  state_->detached_pending.fetch_add(1, std::memory_order_relaxed);
}

void scheduler::detached_task_done() noexcept {
  if (state_->detached_pending.fetch_sub(1, std::memory_order_acq_rel) == 1)
    state_->drain_ec.notify_all();
}

void scheduler::detached_task_failed(std::exception_ptr error) noexcept {
  if (state_->opts.on_unhandled_exception) {
    try {
      state_->opts.on_unhandled_exception(std::move(error));
      return;
    } catch (...) {
    }
  }
  std::fputs("corral: a task submitted with scheduler::submit threw an exception; terminating\n",
             stderr);
  std::terminate();
}

// ---------------------------------------------------------------------------------------------
// The global scheduler and fork.
//
// After fork() the child has one thread: the parent's workers do not exist there, and any lock they
// held stays held. So the child forgets the parent's global scheduler (leaked on purpose:
// destroying it would join threads that do not exist) and makes a fresh one on first use. The
// prepare handler takes the global mutex so that the child never inherits it locked by a thread
// that is gone.

namespace {
std::mutex global_mutex;
std::atomic<scheduler*> global_scheduler{nullptr};
std::once_flag fork_handlers_installed;

void before_fork() {
  global_mutex.lock();
}
void after_fork_in_parent() {
  global_mutex.unlock();
}
void after_fork_in_child() {
  global_scheduler.store(nullptr, std::memory_order_relaxed);
  this_thread() = {};  // if fork was called from a worker, this thread is no worker in the child
  global_mutex.unlock();
}
}  // namespace

scheduler& scheduler::global() {
  scheduler* s = global_scheduler.load(std::memory_order_acquire);
  if (s != nullptr) return *s;
  std::call_once(fork_handlers_installed,
                 [] { pthread_atfork(&before_fork, &after_fork_in_parent, &after_fork_in_child); });
  std::lock_guard<std::mutex> lock(global_mutex);
  s = global_scheduler.load(std::memory_order_relaxed);
  if (s == nullptr) {
    s = new scheduler();  // never destroyed: workers may still run tasks while the process exits
    global_scheduler.store(s, std::memory_order_release);
  }
  return *s;
}

}  // namespace corral
