// Finds pool tasks that wait without saying so (a sleep, a socket read, ssl, a pipe: no
// corral.blocking() around it) and lends their slot while they wait, as Go's sysmon retakes the P of a
// goroutine stuck in a syscall.
//
// A monitor thread samples the threads running Python tasks every millisecond through
// /proc/self/task/<tid>/{stat,syscall,schedstat}. A thread seen sleeping (state S or D) in a system
// call other than futex on two samples running is "stalled": the
// scheduler gets one more slot per stalled thread, and the slot is taken back once the thread runs
// again or its task ends. futex waits count only after ~20 ms without running: a thread waiting for
// the GIL sleeps in futex too (but wakes every 5 ms to ask for it, so it never qualifies), and a task
// blocked on a lock whose owner waits for a slot must get one in the end, or the two deadlock. Announced waits (blocking scopes) are not counted:
// they have given their slot already.
#pragma once

#include <sys/types.h>

namespace corral::bindings::wait_monitor {

// Around each Python task, on the thread that runs it (nesting allowed).
void task_started() noexcept;
void task_finished() noexcept;

// Around an announced wait (corral.blocking(), waits on corral's events) on a task thread.
void announced_wait_started() noexcept;
void announced_wait_finished() noexcept;

// The slots the process wants when nothing is stalled. set_scheduler_slots goes through here so that
// the monitor's lending adds to the caller's number instead of overwriting it.
void set_base_slots(unsigned slots);

// Slots lent now (for stats and tests).
unsigned lent_slots() noexcept;

}  // namespace corral::bindings::wait_monitor
