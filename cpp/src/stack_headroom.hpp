// How much stack the calling thread has left. A thread that waits runs other tasks on its own
// stack (task_group::wait, event::wait, an outside thread helping a parallel_for): deep nesting
// would overflow a small stack (the main thread's 8 MiB, more so under sanitizers), so a waiter
// that runs low stops helping and sleeps instead, leaving the work to threads with room.
#pragma once

#include <cstddef>

namespace corral::detail {

// Bytes between the current frame and the lowest address of this thread's stack (stacks grow
// down on every target corral builds for). Unknown bounds read as plenty.
std::size_t stack_headroom() noexcept;

// Below this a waiter does not start another task on its stack.
inline constexpr std::size_t min_stack_headroom = std::size_t{1} << 20;

}  // namespace corral::detail
