// A budgeted work-stealing scheduler: `slots` threads may run tasks at once; threads that block
// give their slot to another (see blocking.hpp); idle threads sleep. docs/scheduler.md explains the
// design.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <type_traits>
#include <utility>

#include "corral/detail/task.hpp"

namespace corral {

class scheduler;

// Called on a worker thread around each task it runs (corral sets BLAS/OpenMP thread counts there).
// Costs one relaxed load per task when none is installed. Must not throw and must not block long.
class task_observer {
 public:
  virtual void on_task_start(scheduler&) noexcept {}
  virtual void on_task_end(scheduler&) noexcept {}

 protected:
  ~task_observer() = default;
};

struct scheduler_stats {
  unsigned slots = 0;         // threads that may run tasks at once
  unsigned running = 0;       // threads holding a slot now (running or looking for tasks)
  unsigned blocked = 0;       // threads inside a blocking scope (slot given away)
  unsigned returning = 0;     // threads back from blocking, waiting for a slot (they go first)
  unsigned threads = 0;       // worker threads alive
  unsigned spares = 0;        // threads beyond the slots: max(0, threads - slots)
  unsigned parked = 0;        // threads asleep waiting for work
  unsigned peak_threads = 0;  // most worker threads ever alive at once
  unsigned max_threads = 0;   // cap on worker threads, spares included
  std::uint64_t tasks_run = 0;
  std::uint64_t steals = 0;
  std::uint64_t parks = 0;           // times a worker went to sleep
  std::uint64_t spares_started = 0;  // threads started to take a blocked thread's slot
  // The wait monitor (options::monitor_waits): slots of threads found asleep inside a task without
  // a blocking_scope. `lent` are away now (also counted in `blocked` until the thread runs again,
  // then in `returning`); `lends` counts every lend so far.
  unsigned lent = 0;
  std::uint64_t lends = 0;
  // Waits (task_group::wait, parallel_for) by threads outside the pool that took a free slot and
  // ran tasks themselves.
  std::uint64_t outside_helps = 0;
};

class scheduler {
 public:
  struct options {
    unsigned slots = 0;          // 0: the process's CPU budget (see default_slots())
    unsigned max_threads = 0;    // cap on worker threads incl. spares; 0: max(256, 4 * slots)
    std::size_t stack_size = 0;  // worker stack bytes; 0: 64 MiB (reserved, not committed)
    // How long a spare thread may sleep unused before it exits.
    std::chrono::milliseconds spare_idle{200};
    task_observer* observer = nullptr;
    // Watch the threads running tasks (Linux /proc, every millisecond) and lend the slot of one
    // found asleep in a task without a blocking_scope: a sleep, a read on a pipe or socket (asleep
    // outside futex on two samples), or a lock or condition variable (in futex, not running for ~20
    // ms). The slot goes to another thread as for a blocking_scope; when the sleeper runs again it
    // takes a slot back as a returner. See set_wait_monitor.
    bool monitor_waits = false;
    // Called with the exception of a detached (submit) task. Unset: std::terminate, as std::thread
    // does.
    std::function<void(std::exception_ptr)> on_unhandled_exception;
  };

  using stats_t = scheduler_stats;

  scheduler();
  explicit scheduler(options opts);
  // Waits for every submitted task (and what they spawned) to finish, then stops and joins the
  // threads. Must not be called from one of this scheduler's own worker threads.
  ~scheduler();
  scheduler(const scheduler&) = delete;
  scheduler& operator=(const scheduler&) = delete;

  // The process-wide scheduler, made on first use. In a child after fork(), a fresh one.
  static scheduler& global();
  // The scheduler whose worker thread is calling, or nullptr.
  static scheduler* current() noexcept;
  // Slots the global scheduler gets by default: the CPU budget of this process.
  // Throws std::invalid_argument when CORRAL_CPUS is malformed.
  static unsigned default_slots();

  // Runs f() on a worker, detached. Any thread. See options::on_unhandled_exception.
  template <class F>
  void submit(F&& f);

  unsigned slots() const noexcept;
  // Any thread, any time. Fewer slots take effect at the running tasks' next boundaries.
  void set_slots(unsigned slots);
  unsigned max_threads() const noexcept;
  // Threads holding a slot now: cheap (one relaxed load), for observers.
  unsigned running() const noexcept;
  stats_t stats() const noexcept;
  void set_observer(task_observer* observer) noexcept;
  // Starts or stops the wait monitor (options::monitor_waits). Any thread but this scheduler's own
  // workers; cheap when nothing changes. Slots lent when it stops come back as their threads reach
  // their next task boundary. Throws std::system_error when the monitor thread cannot start.
  void set_wait_monitor(bool on);
  bool wait_monitor_on() const noexcept;

  // Internal: queue a task (used by submit, task_group, parallel_for).
  void spawn(detail::task* t);

  struct state;

 private:
  friend class detail::outside_worker;
  template <class F>
  struct detached_task;
  void detached_task_done() noexcept;
  void detached_task_failed(std::exception_ptr error) noexcept;
  void count_detached_task() noexcept;

  std::unique_ptr<state> state_;
};

template <class F>
struct scheduler::detached_task : detail::task {
  template <class G>
  detached_task(G&& g, scheduler* s) : detail::task{&run}, fn(std::forward<G>(g)), owner(s) {}

  static void run(detail::task* base) noexcept {
    auto* self = static_cast<detached_task*>(base);
    scheduler* owner = self->owner;
    try {
      self->fn();
    } catch (...) {
      owner->detached_task_failed(std::current_exception());
    }
    delete self;
    owner->detached_task_done();
  }

  F fn;
  scheduler* owner;
};

template <class F>
void scheduler::submit(F&& f) {
  auto* t = new detached_task<std::decay_t<F>>(std::forward<F>(f), this);
  count_detached_task();
  spawn(t);
}

}  // namespace corral
