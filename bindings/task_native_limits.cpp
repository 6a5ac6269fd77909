#include "task_native_limits.hpp"

#include <algorithm>
#include <mutex>
#include <utility>

#include "corral/scheduler.hpp"

namespace corral::bindings {
namespace {

unsigned inner_thread_count(int inner_threads) {
  if (inner_threads > 0) return static_cast<unsigned>(inner_threads);
  scheduler& s = scheduler::global();
  const unsigned running = std::max(1u, s.running());
  return std::max(1u, s.slots() / running);
}

// One owner for the process-wide controls, so that tasks starting at once do not fight over them.
class process_limit {
 public:
  void task_started(unsigned n) {
    std::lock_guard<std::mutex> lock(mutex_);
    ++tasks_;
    if (n == current_) return;
    native::snapshot replaced = native::controller::process().set_process_limit(n);
    if (current_ == 0) original_ = std::move(replaced);  // the setting before any pool task ran
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

 private:
  std::mutex mutex_;
  int tasks_ = 0;         // pool tasks running with a limit
  unsigned current_ = 0;  // what we set (0: the original is in place)
  native::snapshot original_;
};

process_limit& the_process_limit() {
  static auto* instance = new process_limit;  // never destroyed: tasks may end while the process exits
  return *instance;
}

}  // namespace

task_native_limits::task_native_limits(int inner_threads) noexcept {
  if (inner_threads == 0) return;
  try {
    const unsigned n = inner_thread_count(inner_threads);
    thread_limit_.emplace(native::controller::process(), n);
    counted_ = true;  // task_started counts the task before anything in it can throw
    the_process_limit().task_started(n);
  } catch (...) {
    // A library that refuses a limit must not cost the task; it runs with the library's setting.
  }
}

task_native_limits::~task_native_limits() {
  if (counted_) the_process_limit().task_finished();
}

}  // namespace corral::bindings
