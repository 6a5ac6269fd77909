// The permit table: how many threads of a process may run at once (the budget), and who runs now.
// The seam every layer asks before it runs work (docs/architecture.md, invariants 2-4 and 6;
// docs/permits.md has the protocol and its memory-order argument):
//   * a thread takes a permit before it runs a task and gives it back when the task ends;
//   * a holder about to wait gives its permit back (permit_pause) and takes one again when it
//   wakes,
//     ahead of threads that have not started yet, as Go hands a P over around a system call;
//   * a holder found asleep without saying so is lent out by the permit monitor (set_wait_monitor),
//     and counted again, over the budget if need be, as soon as it runs again;
//   * no thread waits for ever: one that has waited `starvation_limit` while no permit changed
//     hands takes one over the budget (an overdraft); and while the process stalls or a core of
//     the budget idles, sooner (the idle-core rule). Holders may wait on each other in ways no
//     sampler can see (a spin on a flag that a waiting thread would set); plain threads would make
//     progress there, so must we.
// Threads are many, permits few: a thread that holds no permit runs nothing for corral, but never
// runs someone else's work either; waiting for a permit is the only thing it does.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "corral/permit_source.hpp"

namespace corral {

struct permit_stats {
  unsigned permits = 0;        // threads that may run at once: the budget
  unsigned held = 0;           // permits held now, overdrafts included (may exceed `permits`)
  unsigned waiting = 0;        // threads waiting for a permit (new tasks and returning waiters)
  unsigned returning = 0;      // of those, the ones back from a pause: counted in `holders` too
  unsigned paused = 0;         // holders inside a permit_pause (their permit given back)
  unsigned lent = 0;           // holders the monitor found asleep, their permit given to another
  unsigned holders = 0;        // threads between acquire and release (holding, paused or lent)
  unsigned kept = 0;           // permits kept by a thread between two of its tasks (in `held`)
  std::uint64_t acquires = 0;  // permits taken (acquire and resume)
  std::uint64_t waits = 0;     // of those, the ones that had to wait
  std::uint64_t lends = 0;     // permits the monitor lent
  // permits taken over the budget (starvation limit, idle-core rule, or a lent thread back)
  std::uint64_t overdrafts = 0;
  std::uint64_t idle_admissions = 0;  // of those, the idle-core rule's
  // With a machine-wide source (permit_source.hpp): the permits drawn from it now. A process runs
  // max(1, drawn) threads, never more than `permits` (its own first permit needs none:
  // docs/share.md).
  bool sourced = false;
  unsigned drawn = 0;
};

class permit_table {
 public:
  // How long a waiter waits while no permit changes hands before it takes one over the budget.
  static constexpr std::chrono::milliseconds starvation_limit{1000};
  // The idle-core rule (with the permit monitor on; docs/permits.md, "No thread waits for ever"):
  // while no permit changes hands and no task starts, a waiter is let in over the budget
  //  * after stall_window, if the process ran at most half a core meanwhile, fewer holders than
  //    permits are awake and no other thread of it waits for a core: the holders wait on something
  //    no per-thread rule sees (a waiter, a lock polled with a short timeout);
  //  * after idle_core_window more, one per window, if the process used at most permits - 1/2
  //    cores and no other program wanted them: the holders take turns at something one core
  //    serves (the GIL), and a waiter takes the idle core, as plain threads would take turns.
  static constexpr std::chrono::milliseconds stall_window{2};
  static constexpr std::chrono::milliseconds idle_core_window{50};
  // With the permit monitor on, a thread whose task ends keeps its permit for its next task (taken
  // back without the mutex) while nobody waits, or while its slice lasts; the monitor hands on a
  // permit kept and unused for keep_idle_limit (docs/permits.md, "Kept permits").
  // How long a kept permit may stay unused before the monitor hands it on: a Python thread between
  // two tasks may wait this long for the GIL (sys.getswitchinterval()).
  static constexpr std::chrono::milliseconds keep_idle_limit{5};
  // A thread's slice, by default: how long after it took a permit from the table it may still keep
  // it for its next task while other threads wait for one, each holding a task its pool gave it.
  // The GIL's switch interval (sys.getswitchinterval()): plain python's threads take turns about as
  // often.
  static constexpr std::chrono::milliseconds default_hand_over_slice{5};

  explicit permit_table(unsigned permits,
                        std::chrono::microseconds hand_over_slice = default_hand_over_slice);
  // No thread may hold, wait for or pause a permit of this table any more.
  ~permit_table();
  permit_table(const permit_table&) = delete;
  permit_table& operator=(const permit_table&) = delete;

  // The process's table, made on first use with the CPU budget's count (budget.hpp; throws
  // std::invalid_argument when CORRAL_CPUS is malformed). Never destroyed. In a child after fork()
  // it holds only what the forking thread held.
  static permit_table& process();

  unsigned permits() const noexcept;
  // Any thread, any time (>= 1). Fewer permits take effect as holders give theirs back.
  void set_permits(unsigned permits);

  // Takes a permit for the calling thread, waiting (futex) while none is free. Nests: a thread that
  // holds one already only counts the depth. A thread holds permits of one table at a time
  // (std::logic_error otherwise).
  void acquire();
  // acquire() when it need not wait (a permit is free and nobody queues, or this thread holds one).
  bool try_acquire();
  // Gives the calling thread's permit back (the outermost release of a nest). Never throws.
  void release() noexcept;
  // Gives back the permit the calling thread keeps for its next task, if it keeps one: its pool has
  // no more work queued, so no next task is on its way. Never throws.
  void give_back_kept() noexcept;
  // Whether the calling thread is between acquire and release of this table (paused or lent too).
  bool held_by_this_thread() const noexcept;

  // Counters and gauges, read under the table's lock.
  permit_stats stats() const noexcept;
  // Permits taken and not kept idle between two tasks (>= 1): the "running" of the dynamic inner
  // thread rule. Without the lock: a gauge that may be a task start or end out of date.
  unsigned running() const noexcept;
  // Whether at most one permit is held or kept (the caller's): no other task runs or is about to
  // start on a kept permit. A gauge, as running().
  bool alone() const noexcept;
  // Permits taken, kept ones included (>= 1): running() and the tasks about to start on a permit
  // kept for them. A gauge, as running().
  unsigned running_or_starting() const noexcept;

  // Starts or stops the permit monitor (a thread that looks at holders every 1-4 ms, through their
  // CPU clocks and /proc, and lends the permit of one asleep in a system call). std::system_error
  // when it cannot start.
  void set_wait_monitor(bool on);
  bool wait_monitor_on() const noexcept;
  // Ends the monitor's thread now (joined) when no thread holds, keeps or waits on a permit; the
  // next holder starts it again. Before fork(): a process whose pools are done has the threads
  // plain python's would have (3.12+ warns of a fork with more than one).
  void end_idle_monitor();

  // The machine-wide source of the permits beyond the process's first (permit_source.hpp), or
  // nullptr: the process's budget alone. The old source gets back what was drawn from it.
  // process() sets the source the environment names (CORRAL_SHARE, make's jobserver).
  void set_source(std::shared_ptr<permit_source> source);
  std::shared_ptr<permit_source> source() const;
  // The permits the dynamic inner-thread rule divides (>= 1): permits(), or with a machine-wide
  // source min(permits(), max(1, drawn, running())): what the process may run on now. A gauge, as
  // running().
  unsigned usable_permits() const noexcept;
  // usable_permits() after drawing from the source what is free of permits(), for a task that is
  // about to size its BLAS/OpenMP threads: a lone task of a member may use the CPUs the others
  // leave idle. The extra permits go back with the process's next give-back that finds nobody
  // waiting. Without a source: usable_permits(). Asks the source at most once per
  // inner_draw_retry while it has too few free.
  unsigned draw_for_inner_threads() noexcept;
  static constexpr std::chrono::milliseconds inner_draw_retry{2};
  // Why the environment's jobserver was not used (process() only), or empty.
  std::string source_note() const;

  struct state;

 private:
  friend class permit_pause;
  static void fork_prepare() noexcept;
  static void fork_parent() noexcept;
  static void fork_child() noexcept;
  std::unique_ptr<state> state_;
};

// RAII: a permit of `table` for the calling thread.
class permit {
 public:
  explicit permit(permit_table& table) : table_(table) { table_.acquire(); }
  ~permit() { table_.release(); }
  permit(const permit&) = delete;
  permit& operator=(const permit&) = delete;

 private:
  permit_table& table_;
};

// RAII: the calling thread is about to wait. If it holds a permit (of any table) it gives it back
// for the scope, and takes one again on the way out, ahead of threads that have not started a task;
// pauses nest. A thread that holds no permit is not touched: waits outside corral's tasks cost one
// thread-local read.
class permit_pause {
 public:
  permit_pause() noexcept;
  ~permit_pause();
  permit_pause(const permit_pause&) = delete;
  permit_pause& operator=(const permit_pause&) = delete;

  // Whether the calling thread holds (or has paused, or was lent) a permit of any table.
  static bool in_task() noexcept;

 private:
  permit_table::state* paused_ = nullptr;
};

// RAII: the calling thread's waits in this scope are short and need no CPU (a new thread's start,
// whose starter waits for it to run its first instructions): a permit_pause inside leaves the
// permit with the thread, and permit_pause::in_task() is false, so callers that ask first skip
// the pause too. Giving the permit back for such a wait costs two hand-overs, and where the waiter
// holds a lock that another permit holder then blocks on (ThreadPoolExecutor.submit starts its
// threads under a module-wide lock), the waiter cannot take a permit back until the permit
// monitor lends the blocked holder's (docs/permits.md, "Short waits"). Nests.
class short_waits {
 public:
  short_waits() noexcept;
  ~short_waits();
  short_waits(const short_waits&) = delete;
  short_waits& operator=(const short_waits&) = delete;
};

}  // namespace corral
