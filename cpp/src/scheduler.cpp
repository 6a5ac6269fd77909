// The scheduler's public face: constructing and destroying one, and the public methods, which tie
// its parts together. The parts (each .cpp opens with the invariant it keeps; scheduler_state.hpp
// says which part owns each field):
//   scheduler_slots.cpp    the slot table: slots, free_slots, returners, blocked
//   scheduler_threads.cpp  worker threads: records, start, spares, retirement, global() and fork
//   scheduler_queues.cpp   work queues and wake-ups: deques, injection, stealing, notify paths
//   scheduler_waiting.cpp  waiting: task_group/event waits, outside helpers, blocking, lending
//   wait_monitor.cpp       the wait monitor's thread
// docs/scheduler.md describes the design; the comments in each part say why each step is safe.
#include "corral/scheduler.hpp"

#include <pthread.h>

#include <algorithm>
#include <cstdio>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "corral/budget.hpp"
#include "scheduler_state.hpp"
#include "wait_monitor.hpp"

namespace corral {

using detail::this_thread;
using detail::worker;

// ---------------------------------------------------------------------------------------------
// Construction.

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
  unsigned old = s.set_slot_count(n);
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

}  // namespace corral
