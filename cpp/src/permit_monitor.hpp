// The permit monitor: lends the permit of a holder found asleep without a permit_pause, as Go's
// sysmon retakes the P of a goroutine stuck in a system call, and counts it again when the thread
// runs. Not a public header: permit_table::set_wait_monitor starts and stops it.
//
// One thread looks at every holder in stage `holding` each millisecond, or every 4 ms while each
// one it saw was computing (each look preempts a worker on a machine whose every core runs one).
// A look reads the holder's CPU clock; one that ran for 3/4 of the time since the last look is
// computing, and only the others are sampled through /proc (proc_thread_files.hpp: files kept
// open per thread; the rules are the scheduler's, wait_monitor.hpp), from the second pass that
// finds it holding the same permit (a holder that took its permit within the last look is making
// progress):
//  * asleep in a system call other than futex on 2 samples running: lend;
//  * asleep in futex without having run at all for 8 samples (~8 ms): lend. A Python thread
//    waiting for the GIL sleeps in futex too, but wakes every 5 ms to ask for it, so it never
//    qualifies; one blocked on a lock does.
// A lent holder seen running again (awake, or its CPU time moved) is counted again at once, over
// the budget if need be: it runs whether we count it or not, and new tasks then wait until the
// count is back under the budget.
// The idle-core rule (permit_table::stall_window, idle_core_window): while threads wait for a
// permit and no permit changes hands and no task starts, the head waiter is let in over the budget
// after a 2 ms stall (the process ran at most half a core; fewer holders than cores awake, idle
// meaning asleep on two looks in a row having run under a tenth of the time between them; none
// preempted, nor any other thread of the process runnable) or, one per 50 ms, while a core idles
// (the process used at most cores - 1/2 CPUs and was hardly ever preempted). cores: the permits, or
// those drawn from a machine-wide source, at most the affinity mask's CPUs. The holders then wait
// on each other or on the waiters in ways the rules above do not see (a lock polled with a 1 ms
// timeout, threads taking turns at the GIL). docs/permits.md, "No thread waits for ever". With no
// holder for idle_exit the thread ends (a program whose pools are done keeps no thread of ours, so
// a later fork() sees what plain python's would); the next holder starts a new one.
#pragma once

#include <pthread.h>
#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <vector>

#include "permit_state.hpp"
#include "wait_monitor.hpp"

namespace corral::detail {

class permit_monitor {
 public:
  // Starts the thread (std::system_error when it cannot). Called with the table's mutex held.
  explicit permit_monitor(permit_table::state& s);
  // Stops and joins it. Called without the table's mutex.
  ~permit_monitor();
  permit_monitor(const permit_monitor&) = delete;
  permit_monitor& operator=(const permit_monitor&) = delete;

  // Whether the thread ended by itself (read and written under the table's mutex).
  bool exited() const noexcept { return exited_; }

  static constexpr int idle_passes_to_exit = 25;  // x 20 ms

 private:
  struct watched {
    holder* who = nullptr;
    std::uint32_t generation = 0;
    pid_t tid = 0;
    holder_stage stage = holder_stage::holding;
    sleep_streak streak;
    bool seen_before = false;  // the same thread, generation and stage on an earlier pass
    bool kept = false;         // keeping its permit between two tasks
    unsigned idle_looks = 0;   // looks in a row that found it asleep, having hardly run since
    // Still the thread and the task sampled (under the table's mutex): the generation alone
    // repeats when another thread's holder takes this one's storage (pass() says when).
    bool same_turn(const holder& h) const noexcept {
      return h.tid == tid && h.generation.load(std::memory_order_relaxed) == generation;
    }
  };

  // What the idle-core rule needs of the table, read under its mutex at the start of a pass.
  struct standstill {
    bool anyone_waits = false;
    std::chrono::steady_clock::time_point turnover{};
    std::uint64_t starts = 0;
    unsigned cores = 1;        // the permits the process may run on now
    unsigned handed_over = 0;  // permits granted to waiters that have not become holders yet
  };
  // The window the idle-core rule measures: opened at a pass that saw this turnover and start
  // count.
  struct idle_window {
    bool open = false;
    std::chrono::steady_clock::time_point since{};  // the stall window's start
    std::int64_t cpu_ns = 0;                        // the process's CPU time at `since`
    std::chrono::steady_clock::time_point turnover{};
    std::uint64_t starts = 0;
    // The idle-core window: begins once the standstill has lasted a stall window.
    bool armed = false;
    std::chrono::steady_clock::time_point armed_at{};
    std::int64_t armed_cpu_ns = 0;
    long armed_switches = 0;           // the process's involuntary context switches at armed_at
    std::int64_t armed_delay_ns = -1;  // the holders' run delay at armed_at (-1: unreadable)
    std::uint64_t armed_holders = 0;   // which holders that was (a sum of their tids and a count)
  };
  // The holders may have waited on a runqueue for at most 1/max_delay_share of an idle-core window
  // each, on average: more, and other programs want the cores. This process's own short-lived
  // threads (this monitor, a waiter waking) preempt a holder for microseconds at a time, and a
  // thread woken for its turn at the GIL waits a moment; a program that competes for the cores
  // makes a holder wait a third of the time or more.
  static constexpr std::int64_t max_delay_share = 8;
  // Where /proc/self/task/TID/schedstat cannot be read (a kernel without CONFIG_SCHED_INFO): the
  // involuntary context switches of the process allowed over an idle-core window instead.
  static constexpr long max_preemptions = 8;

  static void* entry(void* self) noexcept;
  void run() noexcept;
  // One look at every holder; true when each one holding a permit was computing (or had just
  // taken it) and none keeps or is lent one: the next look may wait busy_interval.
  bool pass() noexcept;
  // The idle-core rule (permit_table::stall_window, idle_core_window): true when a waiter should be
  // let in over the budget now. `awake`: holders in a task seen computing, runnable or only just
  // asleep on this pass; `preempted`: one was runnable but hardly ran.
  bool idle_cores_wait(const standstill& seen, unsigned awake, bool preempted) noexcept;
  // The time the holders' threads have spent runnable but not running so far, in ns
  // (proc_thread_files::run_delay_ns); `holders` gets which threads were read. -1 when one cannot
  // be read.
  std::int64_t holders_run_delay_ns(std::uint64_t& holders, unsigned& counted) noexcept;

  permit_table::state& s_;
  std::vector<watched> watched_;
  idle_window window_;
  proc_thread_files files_;  // the holders' /proc files, kept open between looks
  pid_t tid_ = 0;            // this monitor's thread (running while it looks)
  std::atomic<std::uint32_t> stop_{0};
  bool exited_ = false;  // guarded by the table's mutex
  pthread_t thread_{};
};

}  // namespace corral::detail
