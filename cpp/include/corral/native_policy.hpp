// The BLAS/OpenMP thread limits a task runs under (docs/native.md has the
// measurements behind the rule): set as the task starts, put back as it ends.
//   dynamic:  inner = max(1, slots / demand), demand = max(tasks running now, tasks started and
//             not ended); process-wide controls follow the demand as tasks start and end;
//   fixed n:  inner = n (the pools' static mode).
// Per-thread controls (OpenMP runtimes, OpenBLAS built with OpenMP, MKL's local setting) are set
// for the task's thread alone and restored when the task ends. Process-wide controls (OpenBLAS with
// pthreads as pip's numpy ships it, BLIS, MKL's global setting, FlexiBLAS) follow the latest task
// start while any task with a limit runs, and get the setting they had before back when none does.
// Nothing here throws into a task: a library that refuses a limit leaves the task running with the
// library's own setting.
#pragma once

#include <optional>

#include "corral/native.hpp"
#include "corral/scheduler.hpp"

namespace corral {

// An upper bound on every task's inner thread count (0: none), e.g. a limit the user set in
// OMP_NUM_THREADS: the user's value is one bound, the budget's share another, the lower wins.
// Relaxed: a task that starts while it changes gets the old or the new cap, either of them valid.
void set_inner_thread_cap(unsigned cap) noexcept;

// max(1, slots / running), with running counted as at least 1.
unsigned dynamic_inner_threads(unsigned slots, unsigned running) noexcept;

// What a task's limits are. 0: leave the libraries alone; dynamic_inner (-1, or any negative): the
// dynamic rule; n > 0: n threads.
inline constexpr int dynamic_inner = -1;

// One task's limits (RAII, on the thread that runs the task). Never throws.
class task_native_limits {
 public:
  // `s`: the scheduler whose slots and running count the dynamic rule reads.
  task_native_limits(scheduler& s, int inner_threads) noexcept;
  // `slots`: the permits (budget); `running`: threads running tasks now (permit_table::running()).
  // `alone`: no other permit is held or kept (permit_table::alone()): during the raise delay the
  // task still gets its whole share in per-thread controls, which cannot be raised later.
  // `pool`: an identity of the task's pool (its work queue) for pool_shut_down, or nullptr.
  task_native_limits(unsigned slots, unsigned running, int inner_threads, bool alone = false,
                     const void* pool = nullptr) noexcept;
  ~task_native_limits();
  task_native_limits(const task_native_limits&) = delete;
  task_native_limits& operator=(const task_native_limits&) = delete;

  // The inner thread count this task got in per-thread controls (0: none set, or the libraries
  // refused it); process-wide ones follow process_native_limit().
  unsigned threads() const noexcept { return threads_; }

 private:
  std::optional<native::scoped_thread_limit> thread_limit_;
  unsigned threads_ = 0;
  bool counted_ = false;  // counted by the process-wide owner: uncount on exit
  const void* pool_ = nullptr;
};

// A task_observer that gives every task of the schedulers it is installed on its limits
// (scheduler::options::observer or set_observer). Tasks nested in waits get their own limits and
// restore the outer task's. The object must outlive its installation.
class native_limit_observer final : public task_observer {
 public:
  explicit native_limit_observer(int inner_threads = dynamic_inner) noexcept
      : inner_threads_(inner_threads) {}
  void on_task_start(scheduler& s) noexcept override;
  void on_task_end(scheduler& s) noexcept override;
  int inner_threads() const noexcept { return inner_threads_; }

 private:
  int inner_threads_;
};

// `pool` (the identity its tasks passed to task_native_limits) shut down: if its tasks were the
// last to share the cores, what they shared says nothing of tasks to come, and a task that starts
// next alone gets its dynamic count at once, not after the raise delay (docs/native.md, "Inner
// thread counts"). The pools' work queues call it on their shutdown marker.
void pool_shut_down(const void* pool) noexcept;

// The slots (permits) the dynamic rule divides changed while tasks run: the process-wide controls
// get max(1, slots / tasks started and not ended) now, not at the next start. A Dask worker that
// borrows an idle worker's CPUs, or gives them back, calls it (docs/children.md, "Lending").
void native_slots_changed(unsigned slots) noexcept;

// The process's own share changed (a Dask worker's, as workers come and go): its process-wide
// controls get `threads` now; while tasks run, that is what comes back when the last one ends, and
// the tasks get the dynamic rule over `slots`. Throws what the libraries' controls throw.
void native_share_changed(unsigned slots, unsigned threads);

// The process-wide setting corral's limits have in place now (0: none; the library's own setting is
// in place), and how many tasks run with a limit. For tests and stats.
struct process_native_limit_state {
  unsigned threads = 0;
  int tasks = 0;
};
process_native_limit_state process_native_limit() noexcept;

}  // namespace corral
