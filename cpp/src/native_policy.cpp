// The per-task native-limit policy (native_policy.hpp).
#include "corral/native_policy.hpp"

#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <deque>
#include <mutex>
#include <new>
#include <thread>
#include <utility>

namespace corral {
namespace {

std::atomic<unsigned> inner_thread_cap{0};  // 0: none

unsigned capped(unsigned n) noexcept {
  const unsigned cap = inner_thread_cap.load(std::memory_order_relaxed);
  return cap != 0 && n > cap ? cap : n;
}

class process_limit;
process_limit& the_process_limit();

// One owner for the process-wide controls, so that tasks starting at once do not fight over them.
// It also counts the tasks between their start and end (running or waiting inside), which is the
// demand the dynamic rule divides by: a pool's task that sleeps still comes back for a core, and a
// count of running tasks alone would hand its core's share to the next task's BLAS (measured:
// docs/native.md). The setting from before the first task comes back when the last one ends.
//
// Lowering is immediate (at a task start); raising, when tasks end and the demand falls, waits
// until the demand has stayed low for raise_delay. In a map the next task starts within
// microseconds of the last one's end, and flipping OpenBLAS to 2 threads and back in between costs
// the task still running (measured: W1 0.47 s -> 0.62 s); when the last tasks of a map are one
// large call, its later BLAS calls get the cores the finished tasks left (W2).
class process_limit {
 public:
  static constexpr auto raise_delay = std::chrono::milliseconds(2);
  static constexpr auto idle_exit = std::chrono::seconds(1);

  process_limit() {
    pthread_atfork([] { the_process_limit().mutex_.lock(); },
                   [] { the_process_limit().mutex_.unlock(); },
                   [] { the_process_limit().after_fork_in_child(); });
    // From exit() on, no library setting is changed any more: the libraries' own destructors run
    // next (OpenBLAS joins its threads), while daemon pool threads may still end tasks and the
    // raiser may still fire. Plain python changes nothing there, and neither may we.
    std::atexit([] { the_process_limit().stop_at_exit(); });
  }

  void stop_at_exit() noexcept {
    std::lock_guard<std::mutex> lock(mutex_);  // waits for a change in progress to finish
    exiting_ = true;
    raise_pending_ = false;
  }

  // Counts a starting task of `pool` and returns its inner thread count for per-thread controls:
  // `fixed`, or for 0 the dynamic rule over max(running, tasks started and not ended, this one
  // included). The process-wide controls get it too, or 1 during the raise delay.
  unsigned task_started(unsigned fixed, unsigned slots, unsigned running, bool alone,
                        const void* pool) {
    std::lock_guard<std::mutex> lock(mutex_);
    ++tasks_;
    dynamic_ = fixed == 0;
    slots_ = slots;
    raise_pending_ = false;
    const auto now = std::chrono::steady_clock::now();
    unsigned n = dynamic_ ? dynamic_inner_threads(slots, std::max(running, tasks_)) : fixed;
    n = capped(n);
    unsigned process_wide = n;
    if (dynamic_ && n > 1 && now - last_shared_ < raise_delay) {
      // Tasks shared the cores a moment ago: more are likely on their way (the next chunk of a
      // map; the next task of a scheduler that submits one as one ends, such as dask's, whose
      // idle thread holds no permit), so the process-wide count starts at one and is raised only
      // if the demand stays low. Once the pool that shared them has shut down (pool_shut_down), a
      // lone task gets its threads at once. A per-thread count cannot be raised while the task
      // runs (an OpenMP team keeps it): a task alone, with no other permit held or kept, gets
      // its whole share there.
      process_wide = 1;
      if (!alone) n = 1;
      schedule_raise_locked();
    }
    if (tasks_ > 1) shared_locked(now, pool);
    try {
      apply_locked(process_wide);
    } catch (...) {  // a library that refuses: the task runs with its own setting, still counted
    }
    return n;
  }

  void task_finished(const void* pool) noexcept {
    std::lock_guard<std::mutex> lock(mutex_);
    if (tasks_ > 1) shared_locked(std::chrono::steady_clock::now(), pool);
    if (--tasks_ > 0) {
      if (dynamic_ && dynamic_count_locked() > current_) schedule_raise_locked();
      return;
    }
    raise_pending_ = false;
    if (current_ == 0 || exiting_) return;
    try {
      native::controller::restore(original_);
    } catch (...) {
    }
    original_ = {};
    current_ = 0;
  }

  // `pool` shut down: if its tasks were the last to share the cores, a lone task next gets its
  // threads at once. Another pool's shutdown (a helper pool inside a task, an unrelated `with`
  // block) says nothing of this one's next task.
  void forget_sharing(const void* pool) noexcept {
    std::lock_guard<std::mutex> lock(mutex_);
    if (pool != nullptr && pool == shared_in_) last_shared_ = {};
  }

  // The slots the dynamic rule divides changed while tasks may run (a Dask worker borrowed an idle
  // worker's CPUs, or gave them back): the process-wide count follows at once, both ways. The
  // borrow waited for the lender to stay idle, so no raise delay; a return must not wait either.
  void slots_changed(unsigned slots) noexcept {
    std::lock_guard<std::mutex> lock(mutex_);
    slots_ = std::max(1u, slots);
    if (tasks_ == 0 || !dynamic_ || current_ == 0) return;
    try {
      apply_locked(dynamic_count_locked());
    } catch (...) {
    }
  }

  // The process's share changed (a Dask worker's, as workers come and go): `threads` is the
  // process-wide count its libraries get with no task running, `slots` what the dynamic rule
  // divides. While tasks run, that count is what comes back when the last one ends, and the tasks'
  // count is recomputed over the new slots; set directly instead, the setting this owner believes
  // it made would be stale, and a later change to the same count would be skipped as already made.
  void share_changed(unsigned slots, unsigned threads) {
    std::lock_guard<std::mutex> lock(mutex_);
    slots_ = std::max(1u, slots);
    if (exiting_) return;  // from exit() on, library settings stay as they are (stop_at_exit)
    native::controller& libraries = native::controller::process();
    libraries.set_process_limit(threads);
    if (tasks_ == 0 || current_ == 0) return;
    original_ = libraries.capture(native::limit_scope::process);
    current_ = threads;
    applied_at_scan_ = libraries.rescans();
    if (dynamic_) apply_locked(dynamic_count_locked());
  }

  process_native_limit_state state() noexcept {
    std::lock_guard<std::mutex> lock(mutex_);
    return {current_, static_cast<int>(tasks_)};
  }

 private:
  // The dynamic rule's count for the tasks running now over the slots of now.
  unsigned dynamic_count_locked() const noexcept {
    return capped(dynamic_inner_threads(slots_, tasks_));
  }

  void shared_locked(std::chrono::steady_clock::time_point now, const void* pool) noexcept {
    last_shared_ = now;
    shared_in_ = pool;
  }

  // Sets `n` through the process-wide controls, unless it is what they have and no library was
  // found since (one loaded while tasks run gets the tasks' count at the next start, not its own).
  void apply_locked(unsigned n) {
    if (exiting_) return;
    native::controller& libraries = native::controller::process();
    const std::uint64_t scans = libraries.rescans();
    if (n == current_ && scans == applied_at_scan_) return;
    native::snapshot replaced = libraries.set_process_limit(n);
    if (current_ == 0) {
      original_ = std::move(replaced);  // the setting before any task ran
    } else {
      keep_new_originals_locked(std::move(replaced));
    }
    current_ = n;
    applied_at_scan_ = scans;
  }

  // The settings of libraries limited for the first time now (loaded since the first task), kept
  // to be put back with the others when the last task ends.
  void keep_new_originals_locked(native::snapshot&& replaced) {
    for (native::snapshot::entry& entry : replaced.entries) {
      const bool known =
          std::any_of(original_.entries.begin(), original_.entries.end(),
                      [&](const native::snapshot::entry& e) { return e.library == entry.library; });
      if (!known) original_.entries.push_back(std::move(entry));
    }
  }

  void schedule_raise_locked() noexcept {
    raise_due_ = std::chrono::steady_clock::now() + raise_delay;
    raise_pending_ = true;
    if (!raiser_started_) {
      try {
        std::thread([this] { raise_when_due(); }).detach();
        raiser_started_ = true;
      } catch (...) {  // no thread: the setting stays low (safe), as before any raise existed
        raise_pending_ = false;
        return;
      }
    }
    // A raiser asleep until an earlier due wakes by itself and looks again (a due only moves
    // later): no wake-up per task end in a map of tiny tasks, where ends come every few
    // microseconds (each was a context switch: imap_unordered of 600,000 items, 96,000 switches
    // against plain python's 27,000).
    if (!raiser_timed_) raise_cv_.notify_one();
  }

  // The raiser thread: sleeps unless a raise is pending; ends after idle_exit without one.
  void raise_when_due() {
    std::unique_lock<std::mutex> lock(mutex_);
    for (;;) {
      if (!raise_pending_) {
        // Idle for a second: end, so that a program whose pools are done has no thread of ours left
        // (a later fork() then sees the threads plain python would have); the next raise starts
        // one.
        if (raise_cv_.wait_for(lock, idle_exit) == std::cv_status::timeout && !raise_pending_) {
          raiser_started_ = false;
          return;
        }
        continue;
      }
      if (std::chrono::steady_clock::now() < raise_due_) {  // a later end may have moved it on
        raiser_timed_ = true;
        raise_cv_.wait_until(lock, raise_due_);
        raiser_timed_ = false;
        continue;
      }
      if (raise_due_ < last_shared_ + raise_delay) {  // tasks shared the cores since: wait on
        raise_due_ = last_shared_ + raise_delay;
        continue;
      }
      raise_pending_ = false;
      if (tasks_ > 0 && dynamic_) {
        try {
          apply_locked(dynamic_count_locked());
        } catch (...) {
        }
      }
    }
  }

  // The raiser thread does not exist in a forked child; the lock was held across the fork.
  void after_fork_in_child() noexcept {
    new (&raise_cv_) std::condition_variable;  // the parent's may have had waiters: start afresh
    raiser_started_ = false;
    raiser_timed_ = false;
    raise_pending_ = false;
    mutex_.unlock();
  }

  std::mutex mutex_;
  std::condition_variable raise_cv_;
  unsigned tasks_ = 0;    // tasks started with a limit and not ended
  unsigned slots_ = 1;    // the slots the latest start saw
  bool dynamic_ = true;   // whether the latest start used the dynamic rule
  unsigned current_ = 0;  // what we set (0: the original is in place)
  bool raise_pending_ = false;
  bool raiser_started_ = false;
  bool raiser_timed_ = false;  // the raiser sleeps until raise_due_ (as it was then), not idle
  bool exiting_ = false;       // exit() has begun: libraries are left as they are
  std::chrono::steady_clock::time_point raise_due_{};
  std::chrono::steady_clock::time_point last_shared_{};  // when two or more tasks last ran at once
  const void* shared_in_ =
      nullptr;  // the pool of the task that started or ended then (an identity)
  native::snapshot original_;
  std::uint64_t applied_at_scan_ = 0;  // the controller's rescans() when current_ was set
};

process_limit& the_process_limit() {
  // never destroyed: tasks may end while the process exits
  static auto* instance = new process_limit;
  return *instance;
}

// The limits of the tasks running on this thread, innermost last (tasks nest inside waits), each
// with its nesting depth, so that a start that could not record its entry (out of memory) does not
// make its end pop an outer task's. A deque: its elements never move, and task_native_limits
// cannot.
struct observed_task {
  observed_task(unsigned d, scheduler& s, int inner) noexcept : depth(d), limits(s, inner) {}
  unsigned depth;
  task_native_limits limits;
};
thread_local std::deque<observed_task> observed_tasks;
thread_local unsigned observed_depth = 0;

}  // namespace

void set_inner_thread_cap(unsigned cap) noexcept {
  inner_thread_cap.store(cap, std::memory_order_relaxed);
}

unsigned dynamic_inner_threads(unsigned slots, unsigned running) noexcept {
  return std::max(1u, slots / std::max(1u, running));
}

task_native_limits::task_native_limits(scheduler& s, int inner_threads) noexcept
    : task_native_limits(s.slots(), s.running(), inner_threads) {}

task_native_limits::task_native_limits(unsigned slots, unsigned running, int inner_threads,
                                       bool alone, const void* pool) noexcept
    : pool_(pool) {
  if (inner_threads == 0) return;
  try {
    const unsigned fixed = inner_threads > 0 ? static_cast<unsigned>(inner_threads) : 0;
    // task_started counts the task before anything in it can throw.
    const unsigned n = the_process_limit().task_started(fixed, slots, running, alone, pool);
    counted_ = true;
    thread_limit_.emplace(native::controller::process(), n);
    threads_ = n;
  } catch (...) {
    // A library that refuses a limit must not cost the task; it runs with the library's setting.
  }
}

task_native_limits::~task_native_limits() {
  if (counted_) the_process_limit().task_finished(pool_);
}

void native_limit_observer::on_task_start(scheduler& s) noexcept {
  ++observed_depth;
  try {
    observed_tasks.emplace_back(observed_depth, s, inner_threads_);
  } catch (...) {  // no memory for the record: the task runs with the libraries' settings
  }
}

void native_limit_observer::on_task_end(scheduler&) noexcept {
  if (!observed_tasks.empty() && observed_tasks.back().depth == observed_depth)
    observed_tasks.pop_back();
  --observed_depth;
}

void native_slots_changed(unsigned slots) noexcept {
  the_process_limit().slots_changed(slots);
}

void native_share_changed(unsigned slots, unsigned threads) {
  the_process_limit().share_changed(slots, threads);
}

void pool_shut_down(const void* pool) noexcept {
  the_process_limit().forget_sharing(pool);
}

process_native_limit_state process_native_limit() noexcept {
  return the_process_limit().state();
}

}  // namespace corral
