#include "corral/event.hpp"

#include <climits>

#include "corral/futex.hpp"
#include "corral/task.hpp"

namespace corral {

class event_waitable final : public detail::waitable {
 public:
  explicit event_waitable(event& e) noexcept : event_(e) {}

  bool ready() const noexcept override { return event_.is_set(); }

  bool sleep(const std::chrono::steady_clock::time_point* deadline) noexcept override {
    std::atomic<std::uint32_t>& word = event_.state_;
    std::uint32_t seen = word.load(std::memory_order_acquire);
    while ((seen & event::set_bit) == 0) {
      if ((seen & event::waiter_bit) == 0) {
        if (!word.compare_exchange_weak(seen, seen | event::waiter_bit, std::memory_order_acquire)) continue;
        seen |= event::waiter_bit;
      }
      if (deadline != nullptr) {
        auto left = *deadline - std::chrono::steady_clock::now();
        if (left <= std::chrono::nanoseconds::zero()) return false;
        detail::futex_wait_for(word, seen, left);
      } else {
        detail::futex_wait(word, seen);
      }
      seen = word.load(std::memory_order_acquire);
    }
    return true;
  }

 private:
  event& event_;
};

void event::set() noexcept {
  std::uint32_t old = state_.fetch_or(set_bit, std::memory_order_acq_rel);
  if ((old & waiter_bit) != 0) detail::futex_wake(&state_, INT_MAX);  // address only: see futex.hpp
}

void event::wait() {
  event_waitable waitable(*this);
  detail::wait_for(waitable, nullptr);
}

bool event::wait_for(std::chrono::nanoseconds timeout) {
  event_waitable waitable(*this);
  auto deadline = std::chrono::steady_clock::now() + timeout;
  return detail::wait_for(waitable, &deadline);
}

}  // namespace corral
