// The per-task native-limit policy (native_policy.hpp).
#include "corral/native_policy.hpp"

#include <algorithm>
#include <deque>
#include <mutex>
#include <utility>

namespace corral {
namespace {

// One owner for the process-wide controls, so that tasks starting at once do not fight over them:
// the latest start sets its count; the setting from before the first task comes back when the last
// task with a limit ends.
class process_limit {
 public:
  void task_started(unsigned n) {
    std::lock_guard<std::mutex> lock(mutex_);
    ++tasks_;
    if (n == current_) return;
    native::snapshot replaced = native::controller::process().set_process_limit(n);
    if (current_ == 0) original_ = std::move(replaced);  // the setting before any task ran
    current_ = n;
  }

  void task_finished() noexcept {
    std::lock_guard<std::mutex> lock(mutex_);
    if (--tasks_ > 0 || current_ == 0) return;
    try {
      native::controller::restore(original_);
    } catch (...) {
    }
    original_ = {};
    current_ = 0;
  }

  process_native_limit_state state() noexcept {
    std::lock_guard<std::mutex> lock(mutex_);
    return {current_, tasks_};
  }

 private:
  std::mutex mutex_;
  int tasks_ = 0;         // tasks running with a limit
  unsigned current_ = 0;  // what we set (0: the original is in place)
  native::snapshot original_;
};

process_limit& the_process_limit() {
  static auto* instance = new process_limit;  // never destroyed: tasks may end while the process exits
  return *instance;
}

// The limits of the tasks running on this thread, innermost last (tasks nest inside waits), each
// with its nesting depth, so that a start that could not record its entry (out of memory) does not
// make its end pop an outer task's. A deque: its elements never move, and task_native_limits cannot.
struct observed_task {
  observed_task(unsigned d, scheduler& s, int inner) noexcept : depth(d), limits(s, inner) {}
  unsigned depth;
  task_native_limits limits;
};
thread_local std::deque<observed_task> observed_tasks;
thread_local unsigned observed_depth = 0;

}  // namespace

unsigned dynamic_inner_threads(unsigned slots, unsigned running) noexcept {
  return std::max(1u, slots / std::max(1u, running));
}

task_native_limits::task_native_limits(scheduler& s, int inner_threads) noexcept {
  if (inner_threads == 0) return;
  try {
    const unsigned n = inner_threads > 0 ? static_cast<unsigned>(inner_threads)
                                         : dynamic_inner_threads(s.slots(), s.running());
    thread_limit_.emplace(native::controller::process(), n);
    counted_ = true;  // task_started counts the task before anything in it can throw
    the_process_limit().task_started(n);
    threads_ = n;
  } catch (...) {
    // A library that refuses a limit must not cost the task; it runs with the library's setting.
  }
}

task_native_limits::~task_native_limits() {
  if (counted_) the_process_limit().task_finished();
}

void native_limit_observer::on_task_start(scheduler& s) noexcept {
  ++observed_depth;
  try {
    observed_tasks.emplace_back(observed_depth, s, inner_threads_);
  } catch (...) {  // no memory for the record: the task runs with the libraries' settings
  }
}

void native_limit_observer::on_task_end(scheduler&) noexcept {
  if (!observed_tasks.empty() && observed_tasks.back().depth == observed_depth) observed_tasks.pop_back();
  --observed_depth;
}

process_native_limit_state process_native_limit() noexcept { return the_process_limit().state(); }

}  // namespace corral
