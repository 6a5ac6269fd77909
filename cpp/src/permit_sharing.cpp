// The permit table's side of a machine-wide source (permit_source.hpp, docs/share.md): which of the
// process's permits need one drawn from the source, and when a drawn one goes back.
//
// The rule: `held` threads run on max(1, drawn) permits. A thread that takes the first permit draws
// one if the machine has one free and runs anyway if not (the process's own permit, as make gives
// each job one: nothing waits for another process to make progress); every further thread needs one
// drawn. A permit handed from one of the process's threads to the next keeps its drawn permit; one
// that is given back with nobody waiting returns it to the machine, with every drawn permit no
// thread holds. A task about to size its BLAS/OpenMP threads first draws what is free, up to the
// budget (draw_for_inner_threads), so that a lone task uses the CPUs the other members leave idle.
#include "corral/permit_table.hpp"

#include <algorithm>
#include <chrono>
#include <mutex>
#include <utility>

#include "permit_monitor.hpp"
#include "permit_state.hpp"

namespace corral {

bool permit_table::state::source_allows_one_more_locked() noexcept {
  if (source == nullptr) return true;
  if (drawn < held + 1 && source->try_take()) ++drawn;
  return drawn >= held + 1 || held == 0;
}

bool permit_table::state::source_allows_hand_over_locked() const noexcept {
  return source == nullptr || held <= std::max(1u, drawn.load(std::memory_order_relaxed));
}

void permit_table::state::return_surplus_locked() noexcept {
  while (source != nullptr && drawn > held) {
    source->give_back();
    --drawn;
  }
}

void permit_table::set_source(std::shared_ptr<permit_source> source) {
  std::shared_ptr<permit_source> old;
  {
    std::lock_guard<std::mutex> lock(state_->mutex);
    state& s = *state_;
    if (s.source == source) return;
    for (; s.drawn > 0; --s.drawn) s.source->give_back();
    old = std::exchange(s.source, std::move(source));
    s.sourced.store(s.source != nullptr, std::memory_order_relaxed);
    s.source_note.clear();
  }
  old.reset();  // leaves the old share outside the table's lock
}

unsigned permit_table::draw_for_inner_threads() noexcept {
  state& s = *state_;
  if (!s.sourced.load(std::memory_order_relaxed)) return usable_permits();
  const unsigned all = s.permits.load(std::memory_order_relaxed);
  if (s.drawn.load(std::memory_order_relaxed) >= all) return usable_permits();
  // A share with nothing free answers the same for a while: one look per retry interval, so that
  // the tasks of a busy tree make no system call each (relaxed: a rate limit, not a protocol).
  const auto now = state::clock::now().time_since_epoch().count();
  if (now >= s.next_inner_draw.load(std::memory_order_relaxed)) {
    std::lock_guard<std::mutex> lock(s.mutex);
    while (s.source != nullptr && s.drawn < all && s.source->try_take()) ++s.drawn;
    if (s.drawn < all)
      s.next_inner_draw.store(now + std::chrono::nanoseconds(inner_draw_retry).count(),
                              std::memory_order_relaxed);
  }
  return usable_permits();
}

unsigned permit_table::usable_permits() const noexcept {
  const unsigned all = state_->permits.load(std::memory_order_relaxed);
  if (!state_->sourced.load(std::memory_order_relaxed)) return all;
  const unsigned drawn = state_->drawn.load(std::memory_order_relaxed);
  return std::min(all, std::max({1u, drawn, running()}));
}

std::shared_ptr<permit_source> permit_table::source() const {
  std::lock_guard<std::mutex> lock(state_->mutex);
  return state_->source;
}

std::string permit_table::source_note() const {
  std::lock_guard<std::mutex> lock(state_->mutex);
  return state_->source_note;
}

}  // namespace corral
