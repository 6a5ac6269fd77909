// parallel_for over [begin, end): splits lazily (lazy binary splitting, Tzannes et al., PPoPP
// 2010). A worker runs its range a chunk at a time; between chunks, if its own deque is empty (idle
// workers have stolen what it offered, so there is demand), it gives away the upper half of what
// remains. A range a worker offered and then took back itself (nobody wanted it) is not split again
// until some worker is looking for work: splitting it anyway would cost a task and two contended
// counter updates per halving, log2(n) times, for nothing (at 1e4 iterations on 2 threads, about
// twice oneTBB's time). A range a thief took splits at once, so that work spreads to the other idle
// workers. Chunks grow 1, 2, 4 ... 1024 iterations while nobody asks, so the check costs little on
// cheap bodies (at 64 the per-index cost of an empty body was 1.1-1.3x oneTBB's; at 1024 it is
// level with it), and a chunk starts at 1 again after every split, so on expensive bodies a thief
// waits for chunks that only grew while nobody was asking.
#pragma once

#include <algorithm>
#include <cstddef>

#include "corral/scheduler.hpp"
#include "corral/task_group.hpp"

namespace corral {

namespace detail {

inline constexpr std::size_t parallel_for_max_chunk = 1024;

template <class Body>
void parallel_for_range(std::size_t begin, std::size_t end, Body& body, task_group& group,
                        bool stolen) {
  std::size_t chunk = 1;
  bool offered = false;  // once we have offered a half, an empty deque means a thief took it
  while (begin < end) {
    if (group.is_canceling()) return;
    if (end - begin > 1 && local_queue_empty() && (stolen || offered || work_wanted())) {
      std::size_t middle = begin + (end - begin) / 2;
      const void* offerer = current_worker();
      group.run([middle, end, &body, &group, offerer] {
        parallel_for_range(middle, end, body, group, current_worker() != offerer);
      });
      end = middle;
      chunk = 1;
      offered = true;
      continue;
    }
    std::size_t stop = begin + std::min(chunk, end - begin);
    for (; begin < stop; ++begin) body(begin);
    if (chunk < parallel_for_max_chunk) chunk *= 2;
  }
}

}  // namespace detail

// Calls body(i) once for each i in [begin, end), in parallel, and returns when all calls are done.
// Rethrows the first exception a call threw (the remaining calls are then skipped). Inside a task
// of `s` the calling worker takes part. A thread outside every pool takes a free slot of `s` when
// there is one and takes part as a temporary worker (as oneTBB's calling thread does); otherwise
// the work goes to s's workers.
template <class F>
void parallel_for(std::size_t begin, std::size_t end, F&& body,
                  scheduler& s = scheduler::global()) {
  if (begin >= end) return;
  task_group group(s);
  detail::outside_worker helper(s);  // destroyed before the group: the group outlives its tasks
  if (scheduler::current() == &s && detail::holds_slot()) {
    try {
      detail::parallel_for_range(begin, end, body, group, true);
    } catch (...) {
      group.cancel();
      group.wait();  // the halves given away still refer to body and group
      throw;
    }
  } else {
    group.run(
        [begin, end, &body, &group] { detail::parallel_for_range(begin, end, body, group, true); });
  }
  group.wait();
}

}  // namespace corral
