// One bind_<concept>() per file in bindings/; module.cpp calls them all.
// Bindings stay thin: conversion only, and the GIL released around anything that waits.
#pragma once

#include <nanobind/nanobind.h>

#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <type_traits>
#include <utility>

namespace corral::bindings {

namespace nb = nanobind;

// Whether the interpreter is shutting down (CPython then ends any other thread that takes the GIL).
inline bool interpreter_finalizing() noexcept {
#if PY_VERSION_HEX >= 0x030D0000
  return Py_IsFinalizing() != 0;
#else
  return _Py_IsFinalizing() != 0;
#endif
}

// Takes the GIL back after a wait. At interpreter exit CPython 3.11-3.13 ends a daemon thread (a
// ThreadPool's worker) that takes the GIL back by unwinding its stack (pthread_exit): through C
// frames that is harmless, but nanobind's dispatch catches the unwind (catch (...)) and a noexcept
// frame (any destructor) turns it into std::terminate. So a thread that finds the interpreter
// finalizing parks here for good instead, as 3.14 parks such threads itself; the process ends
// around it. Call it outside destructors and catch blocks.
inline void take_gil_back(PyThreadState* state) {
  while (interpreter_finalizing()) ::pause();
  PyEval_RestoreThread(state);
}

// fn() with the GIL released (take_gil_back after); returns what it returns. Use it, never
// nb::gil_scoped_release (whose destructor takes the GIL back), wherever a thread may wait.
template <class F>
auto without_gil(F&& fn) {
  PyThreadState* state = PyEval_SaveThread();
  if constexpr (std::is_void_v<decltype(fn())>) {
    try {
      fn();
    } catch (...) {
      take_gil_back(state);
      throw;
    }
    take_gil_back(state);
  } else {
    std::optional<std::remove_cvref_t<decltype(fn())>> result;
    try {
      result.emplace(fn());
    } catch (...) {
      take_gil_back(state);
      throw;
    }
    take_gil_back(state);
    return std::move(*result);
  }
}

// A corral WorkQueue's put count (bind_work_queue.cpp), or nullopt for any other object (no
// exception left set). Under the GIL.
std::optional<std::uint32_t> work_queue_puts(PyObject* queue);
// Waits, the GIL released, until something is put in `queue` (a WorkQueue whose put count was
// `seen`) or `limit` passes. Under the GIL on entry and return.
void wait_for_put(PyObject* queue, std::uint32_t seen, std::chrono::microseconds limit);

void bind_announced_wait(nb::module_& m);
void bind_budget(nb::module_& m);
void bind_native(nb::module_& m);
void bind_partition(nb::module_& m);
void bind_permits(nb::module_& m);
void bind_report(nb::module_& m);
void bind_share(nb::module_& m);
void bind_work_queue(nb::module_& m);

}  // namespace corral::bindings
