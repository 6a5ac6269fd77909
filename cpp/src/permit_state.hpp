// The permit table's insides, shared by permit_table.cpp (the threads' side) and permit_monitor.cpp
// (the monitor's side). Not a public header. docs/permits.md explains the protocol.
//
// Everything here but the atomics is guarded by `state::mutex` (the atomics are written under it
// too, except by a thread that takes its own kept permit back: see `holder::keep`). A waiter sleeps
// on its own `granted` word, which the granting thread sets *under the mutex* (so a waiter that
// wakes by timeout and takes the mutex sees a grant made before it) and wakes after unlocking, by
// address only (futex_wake never dereferences it: the waiter may have returned and its stack frame
// be gone).
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "corral/permit_table.hpp"

namespace corral::detail {

class permit_monitor;

enum class holder_stage : std::uint8_t { holding, paused, lent };

// A holder's permit between two of its tasks (docs/permits.md, "Kept permits").
enum keep_state : std::uint32_t {
  not_kept = 0,  // in a task, or holding nothing
  kept = 1,      // the task ended and the thread kept its permit for its next task
  taken = 2,     // someone else took the kept permit: the table forgot this thread
};

// One per thread (thread_local): the thread's place in the table it holds a permit of.
struct holder {
  // A thread that ends while it keeps a permit gives it back.
  ~holder();

  // Set from acquire to the outermost release, and on while the permit is kept. Only this thread
  // writes it, and `depth`.
  permit_table::state* table = nullptr;
  pid_t tid = 0;
  unsigned depth = 0;             // acquire nesting; 0 while the permit is kept
  unsigned pause_depth = 0;       // permit_pause nesting
  unsigned short_wait_depth = 0;  // short_waits nesting: pauses keep the permit meanwhile
  holder_stage stage = holder_stage::holding;
  // Bumped whenever the thread takes a permit (a kept one too): the monitor's key. Atomic because a
  // thread takes its kept permit back without the mutex; relaxed, the monitor compares it under the
  // mutex only to tell "the same task as last pass" from "another one".
  std::atomic<std::uint32_t> generation{0};
  // kept -> not_kept by this thread alone (taking it back, no mutex); kept -> taken by anyone else
  // under the mutex. The compare-exchange decides who has the permit when both try at once.
  std::atomic<std::uint32_t> keep{not_kept};
  std::chrono::steady_clock::time_point kept_since{};  // when it last kept one (under the mutex)
  // When it last took a permit from the table (not its own kept one): its slice's start (under
  // the mutex; see may_keep_locked).
  std::chrono::steady_clock::time_point slice_start{};
};

// A thread waiting for a permit, on its own stack, in the table's FIFO.
struct waiter {
  std::atomic<std::uint32_t> granted{0};
  bool returning = false;  // back from a pause (queued at the front): no permit is kept from it
  waiter* next = nullptr;
  waiter* prev = nullptr;
};

}  // namespace corral::detail

namespace corral {

struct permit_table::state {
  using clock = std::chrono::steady_clock;

  state(unsigned n, clock::duration slice)
      : hand_over_slice(slice), permits(n), last_turnover(clock::now()) {}

  // Unique per table for the process's life (a table made where a destroyed one was is another).
  const std::uint64_t id = next_id.fetch_add(1, std::memory_order_relaxed);
  static inline std::atomic<std::uint64_t> next_id{1};

  // A permit comes back (release, pause, lend): handed to the first waiter while the table is not
  // overdrawn, else the count drops. Returns the waiter to wake after unlocking, or nullptr.
  detail::waiter* give_back_locked() noexcept;
  // Takes one if free and nobody queues; true when taken.
  bool try_take_locked() noexcept;
  // Waits in the FIFO (at the front for a thread returning from a wait) until granted, or until the
  // starvation limit allows an overdraft. Called and returns with `lock` held.
  void wait_locked(std::unique_lock<std::mutex>& lock, bool front);
  void unlink_locked(detail::waiter* w) noexcept;
  // Whether `since` began a full starvation limit ago with no permit changing hands and no task
  // starting meanwhile (`starts_seen`: task_starts when last looked; updated here).
  bool starved_locked(clock::time_point& since, std::uint64_t& starts_seen,
                      clock::time_point now) noexcept;
  void forget_holder_locked(detail::holder* h) noexcept;
  // The FIFO's length, counted by walking it (for assertions: O(waiters)).
  unsigned count_waiters_locked() const noexcept;
  unsigned count_returning_locked()
      const noexcept;  // waiters back from a pause (a walk: for stats())

  // Takes the kept permit of `h` away from it (kept -> taken) and forgets `h`; false when `h` took
  // it back first. The permit stays counted in `held`: the caller hands it on or gives it back.
  bool take_kept_locked(detail::holder* h) noexcept;
  // A kept permit of another thread, taken over for a thread that would otherwise wait; only
  // while nobody queues (waiters get kept permits from the monitor or from the keeper's slice end).
  bool take_over_kept_locked() noexcept;
  // Whether `h`'s permit may be kept at the end of its task, at `now`.
  bool may_keep_locked(const detail::holder& h, clock::time_point now) const noexcept;

  const clock::duration hand_over_slice;  // permit_table::default_hand_over_slice, or the caller's
  mutable std::mutex mutex;
  // Atomic so that a task's start reads them without the mutex (running()); written under it.
  std::atomic<unsigned> permits;
  std::atomic<unsigned> held{0};    // permits taken, kept ones included
  std::atomic<unsigned> kept_n{0};  // of those, kept between two tasks of their thread
  unsigned waiting = 0;
  unsigned paused = 0;
  unsigned lent = 0;
  std::uint64_t acquires = 0;
  std::uint64_t waits = 0;
  std::uint64_t lends = 0;
  std::uint64_t overdrafts = 0;
  std::uint64_t idle_admissions = 0;  // of the overdrafts, the idle-core rule's
  clock::time_point last_turnover;    // when a permit last changed hands
  // Waiters, each holding a task (new ones at the tail, returners at the head).
  detail::waiter* head = nullptr;
  detail::waiter* tail = nullptr;
  // Tasks started, kept permits taken back included (relaxed: a progress counter for the
  // starvation rule; a keeper bumps it without the mutex).
  std::atomic<std::uint64_t> task_starts{0};
  // Threads between acquire and release, and those keeping a permit: for the monitor.
  std::vector<detail::holder*> holders;
  // The monitor runs while wanted and some thread holds a permit; it ends itself after a while
  // without holders, and the next holder starts it again (ensure_monitor_locked).
  void ensure_monitor_locked();
  bool monitor_wanted = false;
  std::unique_ptr<detail::permit_monitor> monitor;

  // The machine-wide source (permit_source.hpp; permit_sharing.cpp): the process runs at most
  // max(1, drawn) threads, its first on its own permit. Whether one more may run, drawing a permit
  // from the source if need be; and giving back the drawn permits no running thread needs.
  bool source_allows_one_more_locked() noexcept;
  bool source_allows_hand_over_locked() const noexcept;
  void return_surplus_locked() noexcept;
  std::shared_ptr<permit_source> source;
  // Atomic so that a task's start reads them without the mutex (usable_permits); written under it.
  std::atomic<unsigned> drawn{0};
  std::atomic<bool> sourced{false};
  std::string source_note;
  // draw_for_inner_threads(): when it may next ask the source (steady_clock ticks), after one that
  // found the budget's permits not all free.
  std::atomic<clock::rep> next_inner_draw{0};
};

}  // namespace corral
