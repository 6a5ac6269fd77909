#include "corral/blocking.hpp"

#include "scheduler_state.hpp"

namespace corral {

blocking_scope::blocking_scope() noexcept {
  detail::thread_state& me = detail::this_thread();
  if (me.state != nullptr && me.has_slot) {
    released_from_ = &me.state->self;
    me.state->enter_blocking();  // an announced wait: the wait monitor leaves it alone
  }
}

blocking_scope::~blocking_scope() {
  if (released_from_ == nullptr) return;
  scheduler::state* s = detail::this_thread().state;
  s->leave_blocking();
  s->rearm_if_in_task();  // back inside the task with a slot: the monitor may watch it again
}

}  // namespace corral
