// An event count: lets a thread sleep until "something may have changed" without losing a wake-up
// that races with its last check of the condition.
//
//   waiter:   key = ec.prepare_wait();  if (condition()) { ec.cancel_wait(); ... } else
//   ec.commit_wait(key); notifier: make condition() true;   ec.notify_one();   (or notify_all)
//
// Why no wake-up is lost (the Dekker / store-buffering pattern, closed by two seq_cst fences):
//   waiter:   W1 waiters_ += 1   F_w: fence(seq_cst)   W2 key = epoch_   W3 check the condition
//   notifier: N1 publish         F_n: fence(seq_cst)   N3 read waiters_  N4 epoch_ += 1, wake
// If N3 reads waiters_ from before W1, then F_n precedes F_w in the single total order of seq_cst
// operations, so W3 (after F_w) sees N1 and the waiter does not sleep. Otherwise N4 happens: if W2
// read the epoch before N4, commit_wait sees a different epoch and does not sleep (the futex
// refuses to sleep on a stale value); if W2 read N4's value, W2 acquires N4 (a release RMW after
// N1), so W3 sees N1.
#pragma once

#include <atomic>
#include <chrono>
#include <climits>
#include <cstdint>

#include "fence.hpp"
#include "futex.hpp"

namespace corral::detail {

class event_count {
 public:
  std::uint32_t prepare_wait() noexcept {
    waiters_.fetch_add(1, std::memory_order_seq_cst);
    seq_cst_fence();
    return epoch_.load(std::memory_order_acquire);
  }

  void cancel_wait() noexcept { waiters_.fetch_sub(1, std::memory_order_relaxed); }

  void commit_wait(std::uint32_t key) noexcept {
    while (epoch_.load(std::memory_order_acquire) == key) futex_wait(epoch_, key);
    waiters_.fetch_sub(1, std::memory_order_relaxed);
  }

  // Returns false when the timeout passed with no notification.
  bool commit_wait_for(std::uint32_t key, std::chrono::nanoseconds timeout) noexcept {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    bool notified = true;
    while (epoch_.load(std::memory_order_acquire) == key) {
      auto left = deadline - std::chrono::steady_clock::now();
      if (left <= std::chrono::nanoseconds::zero()) {
        notified = false;
        break;
      }
      futex_wait_for(epoch_, key, left);
    }
    waiters_.fetch_sub(1, std::memory_order_relaxed);
    return notified;
  }

  void notify_one() noexcept { notify(1); }
  void notify_all() noexcept { notify(INT_MAX); }

  // A hint only (no ordering): how many threads are between prepare_wait and the end of
  // commit_wait.
  std::uint32_t waiters() const noexcept { return waiters_.load(std::memory_order_relaxed); }

 private:
  void notify(int count) noexcept {
    seq_cst_fence();  // F_n: orders the caller's publish before N3
    if (waiters_.load(std::memory_order_relaxed) == 0) return;
    epoch_.fetch_add(1, std::memory_order_seq_cst);
    futex_wake(&epoch_, count);
  }

  alignas(64) std::atomic<std::uint32_t> epoch_{0};
  std::atomic<std::uint32_t> waiters_{0};
};

}  // namespace corral::detail
