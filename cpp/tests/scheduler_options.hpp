// Scheduler options the tests start from: a fixed number of slots (and optionally a thread cap).
#pragma once

#include "corral/scheduler.hpp"

namespace corral::testing {

inline scheduler::options with_slots(unsigned slots, unsigned max_threads = 0) {
  scheduler::options o;
  o.slots = slots;
  o.max_threads = max_threads;
  return o;
}

}  // namespace corral::testing
