// The unit of work the scheduler moves between threads: a heap object that runs and destroys
// itself.
#pragma once

#include <chrono>

namespace corral {
class scheduler;
}

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

// Waits for `w` on the calling thread (see scheduler_waiting.cpp): on a worker that holds a slot,
// runs other tasks while any are found and then sleeps inside a blocking scope. A thread outside
// every pool that waits for work of `owner` (when given) takes a free slot of it, if one is free,
// and runs tasks itself until the wait ends or it finds nothing to run. Elsewhere, just sleeps.
// Returns w.ready() (false only when the deadline passed).
bool wait_for(waitable& w, const std::chrono::steady_clock::time_point* deadline,
              scheduler* owner = nullptr);

// An outside thread (no worker of any scheduler) that takes a free slot of `s`, if one is free
// without exceeding the slots, and is a worker of `s` with a deque of its own until destroyed. On
// any other thread, or with no slot free, it does nothing (joined() is false).
class outside_worker {
 public:
  explicit outside_worker(scheduler& s) noexcept;
  ~outside_worker();
  outside_worker(const outside_worker&) = delete;
  outside_worker& operator=(const outside_worker&) = delete;
  bool joined() const noexcept { return joined_; }

 private:
  scheduler* scheduler_;
  bool joined_ = false;
};

// True when the calling thread is a worker whose own deque is empty: the signal that idle workers
// have stolen everything it offered, which parallel_for's lazy binary splitting uses to split
// again. Off a worker thread: true.
bool local_queue_empty() noexcept;

// True when the calling thread is a worker that holds a slot (may run tasks now).
bool holds_slot() noexcept;

// True when work offered now would be taken: a worker of the caller's scheduler is searching for
// work, or a slot is free for a sleeping one to wake into. Off a worker thread: false.
bool work_wanted() noexcept;

// The calling thread's worker record as an opaque token (nullptr off a worker): parallel_for tells
// a range it offered and then ran itself from one a thief took.
const void* current_worker() noexcept;

// What the calling thread is to the scheduler (cpp/src/scheduler_state.hpp); constant-initialised,
// so that reading its address is one TLS-relative instruction, with no call.
struct thread_state;
extern constinit thread_local thread_state tls_state;

// A token unique to the calling thread among the threads alive (the address of its scheduler
// state): task_group uses it to know its maker.
inline const void* thread_token() noexcept {
  return &tls_state;
}

}  // namespace corral::detail
