// A one-shot event for corral's own futures. wait() on a worker thread runs other tasks while any
// are available and otherwise sleeps inside a blocking scope (its slot handed over); off a worker
// thread it just sleeps. No busy spinning beyond a few microseconds either way.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>

namespace corral {

class event {
 public:
  event() noexcept = default;
  event(const event&) = delete;
  event& operator=(const event&) = delete;

  // Any thread. Wakes every waiter. Safe even if a woken waiter destroys the event right away.
  void set() noexcept;
  bool is_set() const noexcept { return (state_.load(std::memory_order_acquire) & set_bit) != 0; }
  // Makes the event unset again. Not concurrently with wait().
  void reset() noexcept { state_.store(0, std::memory_order_relaxed); }

  void wait();
  // Returns is_set(): false when the timeout passed first.
  bool wait_for(std::chrono::nanoseconds timeout);

 private:
  friend class event_waitable;
  static constexpr std::uint32_t set_bit = 1;
  static constexpr std::uint32_t waiter_bit = 2;
  std::atomic<std::uint32_t> state_{0};
};

}  // namespace corral
