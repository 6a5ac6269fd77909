// The scheduler's insides, shared by its parts (scheduler.cpp lists them: the slot table, worker
// threads, work queues and wake-ups, waiting, the wait monitor), task_group.cpp and blocking.cpp.
// Not a public header. Each part's invariant heads its .cpp; below, each field says which part
// owns it.
#pragma once

#include <pthread.h>
#include <sched.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>

#include "chase_lev_deque.hpp"
#include "corral/scheduler.hpp"
#include "event_count.hpp"
#include "futex.hpp"

namespace corral {

namespace detail {

// One record per worker thread; records are reused by later threads and freed with the scheduler,
// so thieves may read any record at any time.
struct worker {
  worker(scheduler::state& s, unsigned i)
      : owner(s), index(i), rng(0x9E3779B97F4A7C15ull * (i + 1)) {}

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

  // The wait monitor (wait_monitor.cpp) may lend this thread's slot while a task sleeps in it.
  // lend_state is a lend_stage; each transition is made by whoever moves it out of a stable stage
  // with a CAS (the monitor through `busy`), so the slot is given away and taken back exactly once.
  std::atomic<std::uint32_t> lend_state{0};
  std::atomic<std::uint32_t> arm_count{0};  // bumped at each arming: samples belong to one task
  std::atomic<pid_t> tid{0};                // kernel thread id of the thread using this record
  // owner only: tasks running on this thread (nested ones run inside waits)
  unsigned task_depth = 0;
};

// worker::lend_state. Stable stages: not_armed, armed, lent, reclaiming; busy: the monitor is
// moving the record from one to another (the worker waits for it to finish).
enum lend_stage : std::uint32_t {
  not_armed = 0,   // not inside a task, or inside an announced wait: never lent
  armed = 1,       // inside a task, holding its slot: the monitor may lend it
  busy = 2,        // the monitor is changing the stage
  lent = 3,        // the monitor released the slot for this thread (counted in `blocked`)
  reclaiming = 4,  // the thread ran again; the monitor registered it as a returner (`returners`)
};

// What the calling thread is to the scheduler. Plain thread_local: the fork handler resets it.
struct thread_state {
  scheduler::state* state = nullptr;
  worker* self = nullptr;
  bool has_slot = false;  // may run tasks now
  // an outside thread that took a free slot while it waits (outside_worker)
  bool temporary = false;
};

// tls_state (declared in corral/detail/task.hpp): plain thread_local with constant initialisation,
// an access is one TLS-relative address, with no initialisation check and no call (it is on every
// spawn and wait).
inline thread_state& this_thread() noexcept {
  return tls_state;
}

// pthread_create for our own threads (workers, the wait monitor): they never take asynchronous
// signals, so Ctrl-C and friends go to the program's own threads. Returns pthread_create's code.
int create_thread_without_async_signals(pthread_t* thread, const pthread_attr_t* attributes,
                                        void* (*entry)(void*), void* arg) noexcept;

// Helpers the parts share (worker threads, queues, waiting).

// Spinning before sleeping: a worker that runs out of work keeps looking for a few tens of
// microseconds (first pausing, then yielding the CPU to whoever wants it), so that bursts of work
// find it awake; after that it sleeps and costs nothing.
constexpr unsigned pause_rounds = 32;
constexpr unsigned yield_rounds = 32;
constexpr unsigned pauses_per_round = 16;

inline void backoff(unsigned round) noexcept {
  if (round < pause_rounds) {
    for (unsigned i = 0; i < pauses_per_round; ++i) detail::cpu_relax();
  } else {
    sched_yield();
  }
}

inline void bump(std::atomic<std::uint64_t>& counter) noexcept {  // single writer: no RMW needed
  counter.store(counter.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
}

inline pid_t kernel_thread_id() noexcept {
  thread_local const pid_t id = static_cast<pid_t>(::syscall(SYS_gettid));
  return id;
}

}  // namespace detail

namespace detail {
class wait_monitor;
}

struct scheduler::state {
  state(scheduler& owner, options o);
  ~state();

  // ---- Worker threads (scheduler_threads.cpp).
  bool start_thread_locked();             // spawn_mutex held
  detail::worker* claim_record_locked();  // spawn_mutex held; a record no thread uses, marked alive
  void
  start_spare() noexcept;  // gives up quietly (cap reached, no memory): the slot holders carry on
  void run_worker(detail::worker& w);
  bool wait_for_slot_and_work(detail::worker& w, bool& retired);
  void execute(detail::worker& w, detail::task* t) noexcept;

  // ---- The slot table (scheduler_slots.cpp). The only code that changes free_slots, returners,
  // blocked and slots; every other part (the wait monitor included) goes through these.
  bool try_acquire_slot(bool returning) noexcept;
  void release_slot() noexcept;
  void give_back_slot() noexcept;       // release_slot without touching the caller's TLS
  bool should_yield() const noexcept {  // a returner waits for a slot that we hold
    return free_slots.load(std::memory_order_relaxed) <
           static_cast<int>(returners.load(std::memory_order_relaxed));
  }
  bool slot_free_for_new() const noexcept {  // a slot is free beyond those the returners may claim
    return free_slots.load(std::memory_order_relaxed) >
           static_cast<int>(returners.load(std::memory_order_relaxed));
  }
  unsigned able_threads() const noexcept {  // workers neither blocked nor waiting to return
    return threads.load(std::memory_order_relaxed) - blocked.load(std::memory_order_relaxed) -
           returners.load(std::memory_order_relaxed);
  }
  bool surplus_threads() const noexcept;
  void wait_as_returner() noexcept;  // `returners` already counts us: wait for a slot, then hold it
  // The counters of a blocking scope, in one place for the calling thread's scopes and for the wait
  // monitor, which enters and leaves one on a sleeping thread's behalf (a lend, a reclaim).
  void count_blocked_and_give_back_slot() noexcept;  // entering: blocked += 1, the slot given back
  void
  count_returner() noexcept;  // leaving: returners += 1 (first: slot holders yield), blocked -= 1
  void count_returned() noexcept;  // a returner holds a slot again: returners -= 1, sleepers told
  unsigned set_slot_count(
      unsigned n) noexcept;  // set_slots, spawn_mutex held: returns the old count

  // ---- Work queues and wake-ups (scheduler_queues.cpp).
  detail::task* search(detail::worker& w);
  detail::task* find_task(detail::worker& w);
  detail::task* take_injected(detail::worker& w);
  detail::task* steal(detail::worker& w);
  void push(detail::task* t);
  void inject(detail::task* t);  // to the injection queue; may throw std::bad_alloc
  bool work_available() const noexcept;
  void notify_work_strict() noexcept;
  void
  wake_for_free_slot() noexcept;  // after a seq_cst fence: a sleeper or a spare takes a free slot
  void wake_one_if_useful() noexcept;

  // ---- Waiting (scheduler_waiting.cpp): blocking scopes, task group and event waits, outside
  // helpers.
  void enter_blocking() noexcept;
  void leave_blocking() noexcept;
  bool help_until(detail::waitable& w, const std::chrono::steady_clock::time_point* deadline);
  bool join_as_temporary_worker() noexcept;  // an outside thread takes a free slot and a record
  void leave_as_temporary_worker() noexcept;
  // Lending (the wait monitor). The worker side: arm as a task starts, disarm around anything that
  // touches its slot; disarming settles a lend (takes the slot back as a returner).
  void arm(detail::worker& w) noexcept;
  std::uint32_t disarm(detail::worker& w) noexcept;  // returns the stage it found (not settled)
  void settle(std::uint32_t stage) noexcept;         // holds a slot again afterwards
  void rearm_if_in_task() noexcept;
  bool monitoring() const noexcept { return monitor_on.load(std::memory_order_relaxed); }
  void wake_monitor() noexcept;

  // The fields, each tagged with the part that owns it: its code writes the field and keeps its
  // invariant; the others read it or call the owner's functions. The constructor (scheduler.cpp)
  // sets the first values of all of them before any thread sees the state.
  //   [public]  scheduler.cpp: self, opts, observer, stopping, detached_pending, drain_ec
  //   [slots]   scheduler_slots.cpp: free_slots, returners, slots, blocked, slot_ec
  //   [threads] scheduler_threads.cpp: max_threads, record_capacity, threads, peak_threads,
  //             high_water, spares_started, workers, worker_storage, spawn_mutex
  //   [queues]  scheduler_queues.cpp: searching, wake_pending, work_ec, injected_size,
  //             inject_mutex, injected (a worker parks on work_ec and clears wake_pending in
  //             scheduler_threads.cpp, wait_for_slot_and_work)
  //   [waiting] scheduler_waiting.cpp: outside_helps
  //   [monitor] wait_monitor.cpp: monitor_on, lent_now, lends, monitor_ec, monitor_mutex, monitor
  //             (set_wait_monitor in scheduler.cpp starts and stops it; lending's worker side in
  //             scheduler_waiting.cpp settles lent_now)
  // They are declared in cache-line order, not by part: the alignas(64) groups keep the hot
  // counters (free_slots and returners, searching, wake_pending, the injection queue) on lines of
  // their own, and moving fields would change which share a line.

  scheduler& self;           // [public]
  options opts;              // [public]
  unsigned max_threads;      // [threads]
  unsigned record_capacity;  // [threads] worker records: max_threads threads plus one per slot for
                             // outside helpers

  // [slots] slots - threads holding a slot (negative after set_slots shrinks)
  alignas(64) std::atomic<int> free_slots{0};
  std::atomic<unsigned> returners{0};  // [slots] back from blocking, waiting for a slot: go first
  alignas(64) std::atomic<unsigned> searching{0};     // [queues] slot holders spinning for work
  alignas(64) std::atomic<unsigned> wake_pending{0};  // [queues] a best-effort wake is on its way
  alignas(64) std::atomic<unsigned> slots{0};         // [slots]
  std::atomic<unsigned> blocked{0};                   // [slots]
  std::atomic<unsigned> threads{0};                   // [threads]
  std::atomic<unsigned> peak_threads{0};              // [threads]
  std::atomic<unsigned> high_water{0};                // [threads] records [0, high_water) may exist
  std::atomic<task_observer*> observer{nullptr};      // [public]
  std::atomic<bool> stopping{false};                  // [public]
  std::atomic<std::uint64_t> detached_pending{0};     // [public]
  std::atomic<std::uint64_t> spares_started{0};       // [threads]
  // [waiting] waits in which an outside thread ran tasks itself
  std::atomic<std::uint64_t> outside_helps{0};

  // [monitor] The wait monitor (wait_monitor.cpp): off unless options::monitor_waits or
  // set_wait_monitor(true).
  std::atomic<bool> monitor_on{false};
  std::atomic<unsigned> lent_now{0};    // records in stage lent or reclaiming
  std::atomic<std::uint64_t> lends{0};  // slots lent so far
  detail::event_count monitor_ec;       // the monitor, idle while no slot is held
  std::mutex monitor_mutex;             // starting and stopping the monitor
  std::unique_ptr<detail::wait_monitor> monitor;

  std::unique_ptr<std::atomic<detail::worker*>[]> workers;            // [threads]
  std::unique_ptr<std::unique_ptr<detail::worker>[]> worker_storage;  // [threads] owns the records

  // [queues] workers without a slot, waiting for work and a free slot
  detail::event_count work_ec;
  detail::event_count slot_ec;   // [slots] returning threads waiting for a slot
  detail::event_count drain_ec;  // [public] the destructor, waiting for detached tasks

  alignas(64) std::atomic<std::size_t> injected_size{0};  // [queues]
  std::mutex inject_mutex;                                // [queues]
  std::deque<detail::task*> injected;  // [queues] tasks from threads that are not our workers

  std::mutex spawn_mutex;  // [threads]
};

// Runs one task on worker w (the calling thread's record, holding a slot). Inline: it is on every
// task's path, and in the fork-join fast path of task_group::wait (task_group.cpp).
inline void scheduler::state::execute(detail::worker& w, detail::task* t) noexcept {
  task_observer* watcher = observer.load(std::memory_order_relaxed);
  if (watcher != nullptr) watcher->on_task_start(self);
  ++w.task_depth;
  if (monitoring()) arm(w);
  t->execute(t);
  // A task boundary: if the monitor lent our slot while the task slept, take one back (as a
  // returner). Unarmed (the monitor off): one relaxed load.
  if (w.lend_state.load(std::memory_order_relaxed) != detail::not_armed) settle(disarm(w));
  --w.task_depth;
  if (watcher != nullptr) watcher->on_task_end(self);
  detail::bump(w.tasks_run);
}

}  // namespace corral
