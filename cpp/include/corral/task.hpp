// The unit of work the scheduler moves between threads: a heap object that runs and destroys itself.
#pragma once

#include <chrono>

namespace corral::detail {

struct task {
  // Runs the work, destroys the task and does its bookkeeping (group counts). Never throws.
  void (*execute)(task*) noexcept;
};

// Something a thread can wait for (task_group, event). The scheduler decides whether the waiting
// thread runs other tasks meanwhile, or sleeps with its slot handed over.
class waitable {
 public:
  virtual bool ready() const noexcept = 0;
  // Sleeps until ready() or until the deadline (none: no limit). Returns ready().
  virtual bool sleep(const std::chrono::steady_clock::time_point* deadline) noexcept = 0;

 protected:
  ~waitable() = default;
};

// Waits for `w` on the calling thread (see scheduler.cpp): on a worker that holds a slot, runs other
// tasks while any are found and then sleeps inside a blocking scope; elsewhere, just sleeps.
// Returns w.ready() (false only when the deadline passed).
bool wait_for(waitable& w, const std::chrono::steady_clock::time_point* deadline);

// True when the calling thread is a worker whose own deque is empty: the signal that idle workers
// have stolen everything it offered, which parallel_for's lazy binary splitting uses to split again.
// Off a worker thread: true.
bool local_queue_empty() noexcept;

// True when the calling thread is a worker that holds a slot (may run tasks now).
bool holds_slot() noexcept;

}  // namespace corral::detail
