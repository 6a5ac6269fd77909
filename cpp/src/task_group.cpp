#include "corral/task_group.hpp"

#include <climits>

#include "futex.hpp"

namespace corral {

// Waiting for the count to reach zero. The waiter sets waiter_bit before sleeping so the last task
// knows to wake it; futex_wait refuses to sleep if the word changed since we read it, so a
// decrement racing with us only costs another turn of the loop.
class task_group::pending_waitable final : public detail::waitable {
 public:
  explicit pending_waitable(task_group& g) noexcept : group_(g) {}

  bool ready() const noexcept override {
    return (group_.state_.load(std::memory_order_acquire) & count_mask) == 0;
  }

  bool sleep(const std::chrono::steady_clock::time_point* deadline) noexcept override {
    return detail::futex_sleep_until(
        group_.state_, waiter_bit, [](std::uint32_t v) { return (v & count_mask) == 0; }, deadline);
  }

 private:
  task_group& group_;
};

task_group::~task_group() {
  if ((state_.load(std::memory_order_acquire) & count_mask) != 0) {
    if (std::uncaught_exceptions() > 0) cancel();
    wait_until_empty();
  }
}

void task_group::add_pending() {
  std::uint32_t old = state_.fetch_add(1, std::memory_order_relaxed);
  if ((old & count_mask) == count_mask) {
    state_.fetch_sub(1, std::memory_order_relaxed);
    throw std::length_error("corral::task_group: more than 2^31 - 1 tasks pending in one group");
  }
}

void task_group::finish_one() noexcept {
  // acq_rel: our task's effects (and error_) are released to the waiter, who acquires the count.
  std::uint32_t old = state_.fetch_sub(1, std::memory_order_acq_rel);
  // The group may be destroyed as soon as the count is zero; futex_wake only uses the address.
  if (old == (waiter_bit | 1u)) detail::futex_wake(&state_, INT_MAX);
}

void task_group::capture(std::exception_ptr error) noexcept {
  if (!failed_.exchange(true, std::memory_order_acq_rel)) error_ = std::move(error);
  cancel();
}

void task_group::wait_until_empty() noexcept {
  pending_waitable pending(*this);
  detail::wait_for(pending, nullptr, scheduler_);
}

void task_group::wait() {
  if ((state_.load(std::memory_order_acquire) & count_mask) != 0) wait_until_empty();
  state_.fetch_and(count_mask, std::memory_order_relaxed);
  canceling_.store(false, std::memory_order_relaxed);
  if (failed_.load(std::memory_order_acquire)) {
    std::exception_ptr error = std::move(error_);
    error_ = nullptr;
    failed_.store(false, std::memory_order_relaxed);
    std::rethrow_exception(error);
  }
}

}  // namespace corral
