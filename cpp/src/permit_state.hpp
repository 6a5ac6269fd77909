// The permit table's insides, shared by permit_table.cpp (the threads' side) and permit_monitor.cpp
// (the monitor's side). Not a public header. docs/permits.md explains the protocol.
//
// Everything here but `waiter::granted` is guarded by `state::mutex`. A waiter sleeps on its own
// `granted` word, which the granting thread sets *under the mutex* (so a waiter that wakes by
// timeout and takes the mutex sees a grant made before it) and wakes after unlocking, by address
// only (futex_wake never dereferences it: the waiter may have returned and its stack frame be
// gone).
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

// One per thread (thread_local): the thread's place in the table it holds a permit of.
struct holder {
  permit_table::state* table = nullptr;  // set from acquire to the outermost release
  pid_t tid = 0;
  unsigned depth = 0;        // acquire nesting
  unsigned pause_depth = 0;  // permit_pause nesting
  holder_stage stage = holder_stage::holding;
  std::uint32_t generation = 0;  // bumped whenever the thread takes a permit: the monitor's key
};

// A thread waiting for a permit, on its own stack, in the table's FIFO.
struct waiter {
  std::atomic<std::uint32_t> granted{0};
  waiter* next = nullptr;
  waiter* prev = nullptr;
};

}  // namespace corral::detail

namespace corral {

struct permit_table::state {
  using clock = std::chrono::steady_clock;

  explicit state(unsigned n) : permits(n), last_turnover(clock::now()) {}

  // A permit comes back (release, pause, lend): handed to the first waiter while the table is not
  // overdrawn, else the count drops. Returns the waiter to wake after unlocking, or nullptr.
  detail::waiter* give_back_locked() noexcept;
  // Takes one if free and nobody queues; true when taken.
  bool try_take_locked() noexcept;
  // Waits in the FIFO (at the front for a thread returning from a wait) until granted, or until the
  // starvation limit allows an overdraft. Called and returns with `lock` held.
  void wait_locked(std::unique_lock<std::mutex>& lock, bool front);
  void unlink_locked(detail::waiter* w) noexcept;
  void forget_holder_locked(detail::holder* h) noexcept;
  // The FIFO's length, counted by walking it (for assertions: O(waiters)).
  unsigned count_waiters_locked() const noexcept;

  mutable std::mutex mutex;
  unsigned permits;
  unsigned held = 0;
  unsigned waiting = 0;
  unsigned paused = 0;
  unsigned lent = 0;
  std::uint64_t acquires = 0;
  std::uint64_t waits = 0;
  std::uint64_t lends = 0;
  std::uint64_t overdrafts = 0;
  clock::time_point last_turnover;  // when a permit last changed hands
  detail::waiter* head = nullptr;
  detail::waiter* tail = nullptr;
  std::vector<detail::holder*> holders;  // threads between acquire and release, for the monitor
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
  unsigned drawn = 0;
  std::string source_note;
};

}  // namespace corral
