// Waiting in the scheduler: task_group::wait and event::wait (detail::wait_for, help_until),
// outside threads as temporary workers (outside_worker), the glue of blocking scopes
// (enter_blocking, leave_blocking) and the worker's side of lending (arm, disarm, settle; the
// monitor's side is in wait_monitor.cpp). docs/scheduler.md "Blocking scopes", "The wait monitor",
// "Outside threads as temporary workers", "Stack headroom", "Memory orderings" 8 and 9.
//
// Invariant: a waiter runs tasks only while it holds a slot, and gives the slot up (a blocking
// scope, or for good when it is an outside helper) before it sleeps; each lend of the wait monitor
// is settled by exactly one side, whoever moves the record out of a stable lend stage with its CAS.
#include <sched.h>

#include <chrono>
#include <mutex>

#include "assert.hpp"
#include "corral/blocking.hpp"
#include "scheduler_state.hpp"
#include "stack_headroom.hpp"

namespace corral {

using detail::task;
using detail::worker;

namespace {

using detail::backoff;
using detail::kernel_thread_id;
using detail::pause_rounds;
using detail::this_thread;
using detail::yield_rounds;

// How long a thread that holds no slot (an outside thread, or a worker in a blocking scope) keeps
// checking, yielding the CPU in between, before it sleeps in a wait.
constexpr auto external_spin = std::chrono::microseconds(50);

}  // namespace

// ---------------------------------------------------------------------------------------------
// Blocking scopes.

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
  if (me.lend_state.load(std::memory_order_relaxed) != detail::not_armed) settle(disarm(me));
  struct rearm_on_exit {
    scheduler::state& s;
    ~rearm_on_exit() {
      if (s.monitoring()) s.rearm_if_in_task();
    }
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

}  // namespace corral
