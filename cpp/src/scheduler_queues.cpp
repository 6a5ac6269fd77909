// The scheduler's work queues and wake-ups: the workers' deques, the injection queue, stealing,
// searching, and the event count the workers park on (work_ec: the notify paths here, the parking
// in scheduler_threads.cpp). docs/scheduler.md "Queues", "Parking", "Memory orderings" 1-3 and 10.
//
// Invariant: no task is stranded. A push by a thread that holds no slot, and every slot release, is
// followed by a strict wake (seq_cst fence, then the look for sleepers); a push by a slot holder
// needs only a best-effort wake, since that holder empties its own deque before it sleeps.
#include <algorithm>
#include <mutex>

#include "fence.hpp"
#include "scheduler_state.hpp"

namespace corral {

using detail::task;
using detail::worker;

namespace {

using detail::backoff;
using detail::bump;
using detail::pause_rounds;
using detail::this_thread;
using detail::yield_rounds;

std::uint64_t next_random(std::uint64_t& s) noexcept {  // xorshift64
  s ^= s << 13;
  s ^= s >> 7;
  s ^= s << 17;
  return s;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Finding tasks.

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
    if (!me.has_slot)
      notify_work_strict();
    else if (work_ec.waiters() != 0)  // wake_one_if_useful's first test, kept on the hot path
      wake_one_if_useful();
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

namespace detail {

bool local_queue_empty() noexcept {
  const thread_state& me = this_thread();
  return me.self == nullptr || me.self->deque.empty_hint();
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

}  // namespace detail

}  // namespace corral
