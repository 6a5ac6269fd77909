// Helpers the C++ tests share: waiting for a condition, tracking a maximum, busy-waiting, and a
// task-per-call Fibonacci (deep nesting of tiny tasks).
#pragma once

#include <atomic>
#include <chrono>
#include <thread>

#include "corral/scheduler.hpp"
#include "corral/task_group.hpp"

namespace corral::testing {

// Waits until `pred` holds, polling every millisecond, up to `limit`.
template <class Pred>
bool eventually(Pred pred, std::chrono::milliseconds limit = std::chrono::seconds(10)) {
  auto end = std::chrono::steady_clock::now() + limit;
  while (!pred()) {
    if (std::chrono::steady_clock::now() > end) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

// eventually(), for a thread that holds a permit while it waits: it polls without sleeping (yield
// keeps it runnable), so the permit monitor never finds it asleep and lends its permit meanwhile.
template <class Pred>
bool eventually_running(Pred pred, std::chrono::milliseconds limit = std::chrono::seconds(10)) {
  auto end = std::chrono::steady_clock::now() + limit;
  while (!pred()) {
    if (std::chrono::steady_clock::now() > end) return false;
    std::this_thread::yield();
  }
  return true;
}

// Raises `max` to `value` when `value` is larger (concurrent callers keep the largest).
inline void record_max(std::atomic<int>& max, int value) {
  int seen = max.load();
  while (value > seen && !max.compare_exchange_weak(seen, value)) {
  }
}

// Busy-waits for `d`: CPU-bound, never sleeps.
inline void spin_for(std::chrono::microseconds d) {
  auto end = std::chrono::steady_clock::now() + d;
  while (std::chrono::steady_clock::now() < end) {
  }
}

// fib(n) with a task per call.
inline long fib(scheduler& s, int n) {
  if (n < 2) return n;
  long a = 0;
  task_group g(s);
  g.run([&] { a = fib(s, n - 1); });
  long b = fib(s, n - 2);
  g.wait();
  return a + b;
}

}  // namespace corral::testing
