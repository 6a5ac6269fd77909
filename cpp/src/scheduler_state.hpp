// The scheduler's insides, shared by scheduler.cpp, task_group.cpp, event.cpp and blocking.cpp.
// Not a public header.
#pragma once

#include <pthread.h>

#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>

#include "corral/chase_lev_deque.hpp"
#include "corral/event_count.hpp"
#include "corral/scheduler.hpp"

namespace corral {

namespace detail {

// One record per worker thread; records are reused by later threads and freed with the scheduler,
// so thieves may read any record at any time.
struct worker {
  worker(scheduler::state& s, unsigned i) : owner(s), index(i), rng(0x9E3779B97F4A7C15ull * (i + 1)) {}

  scheduler::state& owner;
  const unsigned index;
  chase_lev_deque<task*> deque;
  pthread_t thread{};
  bool joinable = false;           // guarded by state::spawn_mutex
  std::atomic<bool> alive{false};  // a thread owns this record
  std::uint64_t rng;               // owner only
  // Written by the owner only (load + store, no RMW), read by stats().
  std::atomic<std::uint64_t> tasks_run{0};
  std::atomic<std::uint64_t> steals{0};
  std::atomic<std::uint64_t> parks{0};
};

// What the calling thread is to the scheduler. Plain thread_local: the fork handler resets it.
struct thread_state {
  scheduler* sched = nullptr;
  scheduler::state* state = nullptr;
  worker* self = nullptr;
  bool has_slot = false;  // may run tasks now
};

thread_state& this_thread() noexcept;

}  // namespace detail

struct scheduler::state {
  state(scheduler& owner, options o);

  // Worker threads.
  bool start_thread_locked();  // spawn_mutex held
  void start_spare();
  void run_worker(detail::worker& w);
  bool wait_for_slot_and_work(detail::worker& w, bool& retired);
  detail::task* search(detail::worker& w);
  detail::task* find_task(detail::worker& w);
  detail::task* take_injected(detail::worker& w);
  detail::task* steal(detail::worker& w);
  void execute(detail::worker& w, detail::task* t) noexcept;

  // Slots.
  bool try_acquire_slot(bool returning) noexcept;
  void release_slot(bool may_start_spare) noexcept;
  bool should_yield() const noexcept {
    return free_slots.load(std::memory_order_relaxed) <
           static_cast<int>(returners.load(std::memory_order_relaxed));
  }
  bool surplus_threads() const noexcept;
  void enter_blocking() noexcept;
  void leave_blocking() noexcept;

  // Work.
  void push(detail::task* t);
  bool work_available() const noexcept;
  void notify_work_strict() noexcept;
  void wake_one_if_useful() noexcept;
  bool help_until(detail::waitable& w, const std::chrono::steady_clock::time_point* deadline);

  scheduler& self;
  options opts;
  unsigned max_threads;

  alignas(64) std::atomic<int> free_slots{0};    // slots - threads holding a slot (negative after set_slots shrinks)
  std::atomic<unsigned> returners{0};            // back from blocking, waiting for a slot: they go first
  alignas(64) std::atomic<unsigned> searching{0};  // slot holders spinning for work
  alignas(64) std::atomic<unsigned> wake_pending{0};  // a best-effort wake is on its way
  alignas(64) std::atomic<unsigned> slots{0};
  std::atomic<unsigned> blocked{0};
  std::atomic<unsigned> threads{0};
  std::atomic<unsigned> peak_threads{0};
  std::atomic<unsigned> high_water{0};  // records [0, high_water) may exist
  std::atomic<task_observer*> observer{nullptr};
  std::atomic<bool> stopping{false};
  std::atomic<std::uint64_t> detached_pending{0};
  std::atomic<std::uint64_t> spares_started{0};

  std::unique_ptr<std::atomic<detail::worker*>[]> workers;
  std::unique_ptr<std::unique_ptr<detail::worker>[]> worker_storage;  // owns the records

  detail::event_count work_ec;   // workers without a slot, waiting for work and a free slot
  detail::event_count slot_ec;   // returning threads waiting for a slot
  detail::event_count drain_ec;  // the destructor, waiting for detached tasks

  alignas(64) std::atomic<std::size_t> injected_size{0};
  std::mutex inject_mutex;
  std::deque<detail::task*> injected;  // tasks from threads that are not our workers

  std::mutex spawn_mutex;
};

}  // namespace corral
