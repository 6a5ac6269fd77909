// A group of tasks to run and wait for together. wait() on a worker thread runs pending tasks
// instead of sleeping while there are any; the first exception thrown by a task cancels the group
// and is rethrown by wait().
#pragma once

#include <atomic>
#include <cstdint>
#include <exception>
#include <stdexcept>
#include <type_traits>
#include <utility>

#include "corral/scheduler.hpp"

namespace corral {

class task_group {
 public:
  explicit task_group(scheduler& s = scheduler::global()) noexcept : scheduler_(&s) {}
  // Waits for the tasks still running (cancelling them first when unwinding from an exception).
  // An exception a task threw is lost here: call wait() to see it.
  ~task_group();
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
  template <class F>
  struct group_task;
  class pending_waitable;

  // state_: bits 0-30 count tasks started by run() and not yet finished; bit 31 says a thread
  // sleeps in wait(). One word so that the last task can wake the waiter without touching the group
  // after its decrement (the group may be gone by then: see detail::futex_wake).
  static constexpr std::uint32_t waiter_bit = 0x8000'0000u;
  static constexpr std::uint32_t count_mask = 0x7fff'ffffu;

  void add_pending();
  void finish_one() noexcept;
  void capture(std::exception_ptr error) noexcept;
  void wait_until_empty() noexcept;

  scheduler* scheduler_;
  std::atomic<std::uint32_t> state_{0};
  std::atomic<bool> canceling_{false};
  std::atomic<bool> failed_{false};
  std::exception_ptr
      error_;  // written once by the task that set failed_, read after the count is 0
};

template <class F>
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
    delete self;  // the callable's captures die before wait() can return
    group->finish_one();
  }

  F fn;
  task_group* group;
};

template <class F>
void task_group::run(F&& f) {
  auto* t = new group_task<std::decay_t<F>>(std::forward<F>(f), this);
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
