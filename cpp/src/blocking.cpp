#include "corral/blocking.hpp"

#include "scheduler_state.hpp"

namespace corral {

blocking_scope::blocking_scope() noexcept {
  detail::thread_state& me = detail::this_thread();
  if (me.state != nullptr && me.has_slot) {
    released_from_ = me.sched;
    me.state->enter_blocking();
  }
}

blocking_scope::~blocking_scope() {
  if (released_from_ != nullptr) detail::this_thread().state->leave_blocking();
}

}  // namespace corral
