// The wait monitor: finds tasks that sleep without a blocking_scope and lends their slot while they
// sleep, as Go's sysmon retakes the P of a goroutine stuck in a system call. Not a public header:
// scheduler::options::monitor_waits and scheduler::set_wait_monitor turn it on.
//
// One thread per scheduler looks at every worker record that is inside a task (lend_stage armed,
// lent or reclaiming) every millisecond: its thread's CPU clock first (one that computed for 3/4 of
// the time since the last look is not sampled further), then /proc/self/task/<tid>/{stat,syscall}:
//  * asleep (state S or D) in a system call other than futex on 2 samples running: lend;
//  * asleep in futex without having run at all for 8 samples (~8 ms): lend. A thread waiting for
//  a
//    lock or a condition variable sleeps in futex, but so does one waiting briefly for another
//    thread (a Python thread waits for the GIL in futex and wakes every 5 ms to ask for it, so it
//    never qualifies); a task blocked on a lock whose owner waits for a slot gets one in the end.
// Lending is what a blocking_scope does on the thread's behalf: blocked += 1, release the slot
// (which wakes a parked worker or starts a spare when work waits). When the sampled thread runs
// again the monitor registers it as a returner (slot holders yield at their next task boundary) and
// takes the next free slot for it; or the thread itself settles the lend at its next task boundary.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <vector>

#include <pthread.h>

#include "proc_thread_files.hpp"
#include "scheduler_state.hpp"

namespace corral::detail {

// The state letter of a thread (S, D, R...) from the text of its /proc/self/task/<tid>/stat; '\0'
// when it cannot be found. proc_thread_files reads the files (proc_thread_files.hpp).
char thread_state_of(const char* stat_text) noexcept;

// From the text of a thread's /proc/self/task/<tid>/syscall: true, with the kind, when it sleeps
// in a system call; false when it has just woken ("running") or the text is not understood (never
// guess).
bool sleeping_call_of(const char* syscall_text, sleep_kind& kind) noexcept;

// Thread `tid`'s CPU time in ns (the scheduler's sum_exec_runtime, as schedstat's first field) from
// its per-thread CPU clock: one system call, no /proc path to look up. False when it is gone.
bool thread_cpu_ns(pid_t tid, unsigned long long& out) noexcept;

// The rule both monitors (this one and the permit monitor) use to decide that a thread inside a
// task waits without having said so, from consecutive samples of it: asleep in a system call other
// than futex on other_samples_needed samples, or asleep in futex without having run at all for
// futex_samples_needed samples (a Python thread waiting for the GIL wakes every 5 ms, so it never
// qualifies; one blocked on a lock does).
struct sleep_streak {
  static constexpr int other_samples_needed = 2;
  static constexpr int futex_samples_needed = 8;

  // Adds one sample; true when the thread should be lent (the streak then starts over).
  bool waits_unannounced(const thread_sample& sample) noexcept;
  void reset() noexcept { other_samples = futex_samples = 0; }

  // The cheap look before a sample: true when no streak is under way and thread `tid` ran for at
  // least 3/4 of the time since the last look (its CPU clock), so it is computing, not waiting, and
  // /proc need not be read (a CPU-bound task then costs one clock read per look, not three file
  // reads). The streak is then reset; false means: take a full sample.
  bool ran_since_last_look(pid_t tid) noexcept;

  int other_samples = 0;  // consecutive samples asleep outside futex
  int futex_samples = 0;  // consecutive samples asleep in futex, not having run in between
  unsigned long long cpu_ns =
      0;  // CPU time at the last sample (also the lent thread's reclaim test)
  bool cpu_known = false;
  // ran_since_last_look's previous clock reading (0 ns at no time: none yet)
  unsigned long long looked_cpu_ns = 0;
  std::chrono::steady_clock::time_point looked_at{};
};

class wait_monitor {
 public:
  // Starts the monitor thread (std::system_error when it cannot).
  explicit wait_monitor(scheduler::state& s);
  // Stops and joins it. Lends in place stay; their threads settle them at their next boundary.
  ~wait_monitor();
  wait_monitor(const wait_monitor&) = delete;
  wait_monitor& operator=(const wait_monitor&) = delete;

 private:
  struct history {
    std::uint32_t arm_count = 0;
    pid_t tid = 0;
    sleep_streak streak;
  };

  static void* entry(void* self) noexcept;
  void run() noexcept;
  // One look at every record; returns {watching anything, any reclaiming}.
  void pass(bool& watching, bool& any_reclaiming) noexcept;
  void lend(worker& w, std::uint32_t sampled_arm_count) noexcept;
  void reclaim(worker& w, std::uint32_t from) noexcept;
  void idle_wait() noexcept;
  void tick(bool any_reclaiming) noexcept;

  scheduler::state& s_;
  std::vector<history> history_;
  proc_thread_files files_;  // the sampled threads' /proc files, kept open between looks
  std::atomic<std::uint32_t> stop_{0};
  pthread_t thread_{};
};

}  // namespace corral::detail
