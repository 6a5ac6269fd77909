// A group of tasks to run and wait for together. wait() on a worker thread runs pending tasks
// instead of sleeping while there are any; the first exception thrown by a task cancels the group
// and is rethrown by wait().
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <new>
#include <stdexcept>
#include <type_traits>
#include <utility>

#include "corral/scheduler.hpp"

namespace corral {

class task_group {
 public:
  explicit task_group(scheduler& s = scheduler::global()) noexcept
      : scheduler_(&s), owner_(detail::thread_token()) {}
  // Waits for the tasks still running (cancelling them first when unwinding from an exception).
  // An exception a task threw is lost here: call wait() to see it.
  ~task_group() {
    if (!done()) wait_at_destruction();
  }
  task_group(const task_group&) = delete;
  task_group& operator=(const task_group&) = delete;

  // Any thread, including the group's own tasks. Tasks not yet started when the group is cancelled
  // are skipped.
  template <class F>
  void run(F&& f);

  // Returns when every task has finished (or was skipped); rethrows the first exception a task
  // threw. Afterwards the group is empty, not cancelled, and can be reused.
  void wait();

  // Tasks not yet started will not run; running tasks may poll is_canceling().
  void cancel() noexcept { canceling_.store(true, std::memory_order_relaxed); }
  bool is_canceling() const noexcept { return canceling_.load(std::memory_order_relaxed); }

  scheduler& owner() const noexcept { return *scheduler_; }

 private:
  template <class F, bool InGroup>
  struct group_task;
  class pending_waitable;

  // The inline task: a group keeps room for one task in itself, so that the common pattern (run
  // one task, work, wait: fib, a parallel_for split) allocates nothing. Only the thread that made
  // the group claims it (no RMW needed to claim), when the previous inline task has finished.
  // inline_state_: bits 0-1 an inline_stage, bits 2-31 a generation bumped by every claim, so that
  // a waiter can tell "idle all along" from "finished and claimed again" (see done()).
  enum inline_stage : std::uint32_t {
    inline_idle = 0,     // the storage is free (its last task has finished and been destroyed)
    inline_queued = 1,   // a task is in the storage, queued or running; not counted in state_
    inline_counted = 2,  // as queued, and the maker, asleep in wait(), counted it in state_ (its
                         // end takes the count off and wakes the maker)
  };
  static constexpr std::uint32_t inline_stage_mask = 3u;
  static constexpr std::size_t inline_bytes = 64;

  // state_: bits 0-30 count tasks started by run() and not yet finished; bit 31 says a thread
  // sleeps in wait(). One word so that the last task can wake the waiter without touching the group
  // after its decrement (the group may be gone by then: see detail::futex_wake).
  static constexpr std::uint32_t waiter_bit = 0x8000'0000u;
  static constexpr std::uint32_t count_mask = 0x7fff'ffffu;

  void add_pending();
  void finish_one() noexcept;
  // The inline task's end. On the maker's thread a release store suffices: only the maker counts
  // the inline task in state_, and only while it sleeps in a wait of this group, when it runs
  // nothing; so the stage is `inline_queued` here and nobody else writes it. Elsewhere an RMW.
  void finish_inline() noexcept {
    if (owner_ == detail::thread_token()) {
      std::uint32_t stage = inline_state_.load(std::memory_order_relaxed);
      inline_state_.store(stage & ~inline_stage_mask, std::memory_order_release);
    } else {
      finish_inline_elsewhere();
    }
  }
  void finish_inline_elsewhere() noexcept;
  void wait_at_destruction() noexcept;
  // No heap task pending and the inline storage idle, with no claim in between (task_group.cpp
  // says why the inline stage is read before and after the count).
  bool done() const noexcept {
    std::uint32_t before = inline_state_.load(std::memory_order_acquire);
    if ((before & inline_stage_mask) != inline_idle) return false;
    if ((state_.load(std::memory_order_acquire) & count_mask) != 0) return false;
    return inline_state_.load(std::memory_order_acquire) == before;
  }
  void capture(std::exception_ptr error) noexcept;
  void wait_until_empty() noexcept;

  scheduler* scheduler_;
  const void* owner_;  // detail::thread_token() of the thread that made the group
  std::atomic<std::uint32_t> state_{0};
  std::atomic<std::uint32_t> inline_state_{inline_idle};
  std::atomic<bool> canceling_{false};
  std::atomic<bool> failed_{false};
  std::exception_ptr
      error_;  // written once by the task that set failed_, read after the count is 0
  alignas(16) unsigned char inline_storage_[inline_bytes];
};

// InGroup: the task lives in the group's inline storage (destroyed in place, ended with
// finish_inline) rather than on the heap (deleted, ended with finish_one).
template <class F, bool InGroup>
struct task_group::group_task : detail::task {
  template <class G>
  group_task(G&& g, task_group* owner) : detail::task{&run}, fn(std::forward<G>(g)), group(owner) {}

  static void run(detail::task* base) noexcept {
    auto* self = static_cast<group_task*>(base);
    task_group* group = self->group;
    if (!group->is_canceling()) {
      try {
        self->fn();
      } catch (...) {
        group->capture(std::current_exception());
      }
    }
    // The callable's captures die before wait() can return.
    if constexpr (InGroup) {
      self->~group_task();
      group->finish_inline();
    } else {
      delete self;
      group->finish_one();
    }
  }

  F fn;
  task_group* group;
};

template <class F>
void task_group::run(F&& f) {
  using in_group = group_task<std::decay_t<F>, true>;
  if constexpr (sizeof(in_group) <= inline_bytes && alignof(in_group) <= 16) {
    // Only the group's maker claims the storage, so a load that sees it idle (acquire: the last
    // inline task's destruction happened before) and a plain store suffice; the push publishes both
    // the task and the new stage to a thief.
    std::uint32_t seen = inline_state_.load(std::memory_order_acquire);
    if ((seen & inline_stage_mask) == inline_idle && owner_ == detail::thread_token()) {
      auto* t = ::new (static_cast<void*>(inline_storage_)) in_group(std::forward<F>(f), this);
      inline_state_.store((seen + 4u) | inline_queued, std::memory_order_relaxed);
      try {
        scheduler_->spawn(t);
      } catch (...) {  // out of memory queueing it: the task never runs
        t->~in_group();
        inline_state_.store(seen + 4u, std::memory_order_relaxed);
        throw;
      }
      return;
    }
  }
  auto* t = new group_task<std::decay_t<F>, false>(std::forward<F>(f), this);
  try {
    add_pending();
  } catch (...) {
    delete t;
    throw;
  }
  try {
    scheduler_->spawn(t);
  } catch (...) {  // out of memory queueing it: the task never runs
    delete t;
    finish_one();
    throw;
  }
}

}  // namespace corral
