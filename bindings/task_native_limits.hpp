// The BLAS/OpenMP thread limits a pool task runs under (design.md "Inner threads"), set as the task
// starts and put back as it ends: inner = max(1, slots // tasks running now) (dynamic), or a fixed n
// (the pools' static mode).
//
// Per-thread controls (OpenMP, OpenBLAS built with OpenMP, MKL's local setting) are set for the task's
// thread alone. Process-wide controls (OpenBLAS with pthreads, as pip's numpy ships it; BLIS; MKL's
// global setting) follow the latest task start while any pool task runs, and get their original
// setting back when none does. Never throws: a library that refuses a limit leaves the task running
// with the library's own setting.
#pragma once

#include <optional>

#include "corral/native.hpp"

namespace corral::bindings {

class task_native_limits {
 public:
  // inner_threads: 0 touches nothing, < 0 is the dynamic rule, n > 0 sets n.
  explicit task_native_limits(int inner_threads) noexcept;
  ~task_native_limits();
  task_native_limits(const task_native_limits&) = delete;
  task_native_limits& operator=(const task_native_limits&) = delete;

 private:
  std::optional<native::scoped_thread_limit> thread_limit_;
  bool counted_ = false;
};

}  // namespace corral::bindings
