// Sleeping on a 32-bit atomic word: the one place that talks to the OS to park a thread.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>

namespace corral::detail {

// Sleeps while `word` still holds `expected`. May return spuriously: callers loop on their
// condition.
void futex_wait(std::atomic<std::uint32_t>& word, std::uint32_t expected) noexcept;

// As futex_wait, but gives up after `timeout`; returns false when the time ran out.
bool futex_wait_for(std::atomic<std::uint32_t>& word, std::uint32_t expected,
                    std::chrono::nanoseconds timeout) noexcept;

// Wakes up to `count` threads sleeping on `word`. Takes a pointer and never dereferences it in user
// space, so it is safe to call after the owner of the word may already have been destroyed (the
// kernel treats the address as a key; a stale key at worst wakes a sleeper spuriously).
void futex_wake(std::atomic<std::uint32_t>* word, int count) noexcept;

// Sleeps until done(word's value) holds, first setting `waiter_bit` in the word so that whoever
// makes it true knows to futex_wake (the bit is set with acquire so a value seen after it is
// current). With a deadline, returns false when it passes first.
template <class Done>
bool futex_sleep_until(std::atomic<std::uint32_t>& word, std::uint32_t waiter_bit, Done done,
                       const std::chrono::steady_clock::time_point* deadline) noexcept {
  std::uint32_t seen = word.load(std::memory_order_acquire);
  while (!done(seen)) {
    if ((seen & waiter_bit) == 0) {
      if (!word.compare_exchange_weak(seen, seen | waiter_bit, std::memory_order_acquire)) continue;
      seen |= waiter_bit;
    }
    if (deadline != nullptr) {
      auto left = *deadline - std::chrono::steady_clock::now();
      if (left <= std::chrono::nanoseconds::zero()) return false;
      futex_wait_for(word, seen, left);
    } else {
      futex_wait(word, seen);
    }
    seen = word.load(std::memory_order_acquire);
  }
  return true;
}

inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield" ::: "memory");
#endif
}

}  // namespace corral::detail
