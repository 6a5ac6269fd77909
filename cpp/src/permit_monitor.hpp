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
// With no holder for idle_exit the thread ends (a program whose pools are done keeps no thread of
// ours, so a later fork() sees what plain python's would); the next holder starts a new one.
#pragma once

#include <pthread.h>
#include <sys/types.h>

#include <atomic>
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
    bool seen_before = false;  // in the same generation and stage on an earlier pass
    bool kept = false;         // keeping its permit between two tasks
  };

  static void* entry(void* self) noexcept;
  void run() noexcept;
  // One look at every holder; true when each one holding a permit was computing (or had just
  // taken it) and none keeps or is lent one: the next look may wait busy_interval.
  bool pass() noexcept;

  permit_table::state& s_;
  std::vector<watched> watched_;
  proc_thread_files files_;  // the holders' /proc files, kept open between looks
  std::atomic<std::uint32_t> stop_{0};
  bool exited_ = false;  // guarded by the table's mutex
  pthread_t thread_{};
};

}  // namespace corral::detail
