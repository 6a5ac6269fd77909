#include "corral/task_group.hpp"

#include <climits>

#include "futex.hpp"
#include "scheduler_state.hpp"
#include "stack_headroom.hpp"

namespace corral {

// Waiting for the group to be done. Heap tasks are counted in state_; the inline task is not, so
// that running it costs no RMW on state_. The waiter sets waiter_bit before sleeping so the last
// task knows to wake it; futex_wait refuses to sleep if the word changed since we read it, so a
// decrement racing with us only costs another turn of the loop. The inline task's end must wake a
// sleeping waiter too: the maker, before it sleeps, counts a queued inline task in state_ itself
// and marks it `inline_counted`; its end (on another thread: the maker sleeps) sees the mark in
// its RMW and takes the count off. Any other waiter (a group waited for by a thread that did not
// make it) cannot count it (the maker's own end of the task is a plain store), so it sleeps for at
// most inline_poll at a time while an inline task is queued.
class task_group::pending_waitable final : public detail::waitable {
 public:
  explicit pending_waitable(task_group& g) noexcept : group_(g) {}

  bool ready() const noexcept override { return group_.done(); }

  // The fork-join fast path: a worker holding its slot runs the tasks at the bottom of its own
  // deque (in fork-join code, the waiter's own children, newest first) until the group is done.
  // It is help_until's first step without the set-up that help_until needs for everything else
  // (lend settling, deadlines, the injection queue, stealing, sleeping), so it is taken only when
  // none of that applies: not monitored, enough stack, nobody owed a slot. Returns true when done;
  // false hands over to the general wait, which starts where this stopped.
  bool run_own_tasks() noexcept {
    detail::thread_state& me = detail::this_thread();
    scheduler::state* s = me.state;
    if (s == nullptr || !me.has_slot || s->monitoring()) return false;
    detail::worker& w = *me.self;
    if (w.lend_state.load(std::memory_order_relaxed) != detail::not_armed) return false;
    if (detail::stack_headroom() < detail::min_stack_headroom) return false;
    while (!s->should_yield()) {
      detail::task* t = w.deque.pop();
      if (t == nullptr) return false;
      s->execute(w, t);
      if (group_.done()) return true;
    }
    return false;
  }

  bool sleep(const std::chrono::steady_clock::time_point* deadline) noexcept override {
    const bool maker = detail::thread_token() == group_.owner_;
    while (!group_.done()) {
      if (maker) {
        count_inline_task();
      } else if ((group_.inline_state_.load(std::memory_order_acquire) & inline_stage_mask) !=
                 inline_idle) {
        // Nobody wakes us for it: sleep at most a poll interval, whatever the count says.
        std::chrono::nanoseconds left = inline_poll;
        if (deadline != nullptr) {
          auto now = std::chrono::steady_clock::now();
          if (now >= *deadline) return group_.done();
          if (*deadline - now < left) left = *deadline - now;
        }
        detail::futex_wait_for(group_.state_, group_.state_.load(std::memory_order_relaxed), left);
        continue;
      }
      if (!detail::futex_sleep_until(
              group_.state_, waiter_bit, [](std::uint32_t v) { return (v & count_mask) == 0; },
              deadline))
        return false;
    }
    return true;
  }

 private:
  static constexpr auto inline_poll = std::chrono::milliseconds(1);

  // The maker only. A queued inline task is added to state_'s count before it is marked counted,
  // so its end (which reads the mark with acquire) always takes off a count that is there.
  void count_inline_task() noexcept {
    std::uint32_t seen = group_.inline_state_.load(std::memory_order_acquire);
    if ((seen & inline_stage_mask) != inline_queued) return;
    group_.state_.fetch_add(1, std::memory_order_relaxed);
    if (!group_.inline_state_.compare_exchange_strong(
            seen, (seen & ~inline_stage_mask) | inline_counted, std::memory_order_acq_rel,
            std::memory_order_acquire))
      group_.finish_one();  // it ended meanwhile: undo
  }

  task_group& group_;
};

void task_group::wait_at_destruction() noexcept {
  if (std::uncaught_exceptions() > 0) cancel();
  wait_until_empty();
}

// done() (task_group.hpp): the inline stage is read before and after the count, with acquire, so
// every task seen ended is seen with what it spawned. A task that spawned the inline task and then
// ended between the two reads shows up as a new generation in the second. Only the group's maker
// claims the storage; a claim after the second read is made by code that is not a task of the
// group (those have all ended): the caller's own race between run() and wait(), as for any task.

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

void task_group::finish_inline_elsewhere() noexcept {
  // acq_rel: the task's effects (and its destruction) are released to the waiter and to the next
  // claim, which acquire the idle stage. After this RMW the group may be gone unless the maker
  // counted the task in state_: then it waits for the finish_one below.
  std::uint32_t old = inline_state_.fetch_and(~inline_stage_mask, std::memory_order_acq_rel);
  if ((old & inline_stage_mask) == inline_counted) finish_one();
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
  if (!done()) {
    pending_waitable pending(*this);
    if (!pending.run_own_tasks()) detail::wait_for(pending, nullptr, scheduler_);
  }
  // A sleeping waiter left its bit set; nothing else writes the word while the group is done.
  if ((state_.load(std::memory_order_relaxed) & waiter_bit) != 0)
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
