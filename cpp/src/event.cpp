#include "corral/event.hpp"

#include <climits>

#include "corral/detail/task.hpp"
#include "futex.hpp"

namespace corral {

class event_waitable final : public detail::waitable {
 public:
  explicit event_waitable(event& e) noexcept : event_(e) {}

  bool ready() const noexcept override { return event_.is_set(); }

  bool sleep(const std::chrono::steady_clock::time_point* deadline) noexcept override {
    return detail::futex_sleep_until(
        event_.state_, event::waiter_bit, [](std::uint32_t v) { return (v & event::set_bit) != 0; },
        deadline);
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
