// The scheduler's slot table: free_slots, returners, blocked and slots (scheduler_state.hpp, "The
// slot table"), the only code that changes them: taking a slot (try_acquire_slot), giving one back
// (release_slot, give_back_slot), the counters of a blocking scope (count_*), a returner's wait,
// and the count helpers. docs/scheduler.md "Slots and threads", "Memory orderings" 4.
//
// Invariant: threads holding a slot never exceed `slots` (after set_slots shrinks them, only until
// each holder's next task boundary): free_slots changes only by RMW, is taken only by the CAS in
// try_acquire_slot, which leaves as many free as there are returners, and every release ends in the
// same check for returners and for work.
#include <sched.h>

#include "assert.hpp"
#include "fence.hpp"
#include "scheduler_state.hpp"

namespace corral {

using detail::this_thread;

bool scheduler::state::surplus_threads() const noexcept {
  return threads.load(std::memory_order_relaxed) > slots.load(std::memory_order_relaxed) +
                                                       blocked.load(std::memory_order_relaxed) +
                                                       returners.load(std::memory_order_relaxed);
}

// ---------------------------------------------------------------------------------------------
// Taking and giving back a slot.

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
  // Strict (scheduler_queues.cpp, "Two kinds of wake-up"): the release, then the look at the work
  // and sleepers.
  detail::seq_cst_fence();
  if (work_available()) wake_for_free_slot();
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

// set_slots (spawn_mutex held): the new count, and the difference in free slots. Fewer slots:
// holders over the limit see should_yield() at their next task boundary.
unsigned scheduler::state::set_slot_count(unsigned n) noexcept {
  unsigned old = slots.exchange(n, std::memory_order_seq_cst);
  free_slots.fetch_add(static_cast<int>(n) - static_cast<int>(old), std::memory_order_seq_cst);
  return old;
}

namespace detail {

bool holds_slot() noexcept {
  return this_thread().has_slot;
}

}  // namespace detail

}  // namespace corral
