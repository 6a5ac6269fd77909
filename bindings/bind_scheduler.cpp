// The scheduler for corral's Python pools: submit a callable to scheduler::global(), an event for
// corral's futures, blocking scopes, and the slots. See src/corral/_scheduler.py for the Python view.
//
// GIL: a task takes it only to run its callable; every wait releases it. Each worker thread keeps one
// Python thread state for its whole life (made on its first task), so threading.local data and the
// pools' per-thread initializers survive from one task to the next, and taking the GIL costs no
// thread-state allocation.
#include <Python.h>
#include <nanobind/stl/optional.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <exception>
#include <optional>
#include <stdexcept>
#include <string>

#include "bindings.hpp"
#include "corral/blocking.hpp"
#include "corral/event.hpp"
#include "corral/native_policy.hpp"
#include "corral/scheduler.hpp"

namespace corral::bindings {
namespace {

bool python_is_going_away() {
#if PY_VERSION_HEX >= 0x030D0000
  return !Py_IsInitialized() || Py_IsFinalizing();
#else
  return !Py_IsInitialized() || _Py_IsFinalizing();
#endif
}

// The Python thread state a scheduler thread keeps between tasks.
class worker_thread_state {
 public:
  worker_thread_state() = default;
  worker_thread_state(const worker_thread_state&) = delete;
  worker_thread_state& operator=(const worker_thread_state&) = delete;

  // Makes the thread state on first use (the GIL is not held by the caller); false when Python is
  // going away. Afterwards PyGILState_Ensure finds it and only switches to it.
  bool ready() {
    if (made_) return true;
    if (python_is_going_away()) return false;
    gil_ = PyGILState_Ensure();
    state_ = PyEval_SaveThread();  // keep the state, drop the GIL
    made_ = true;
    return true;
  }

  ~worker_thread_state() {
    // Thread exit: delete the state while Python can still take it; during or after finalization it
    // is leaked (the interpreter frees it, or the process is ending).
    if (!made_ || python_is_going_away()) return;
    PyEval_RestoreThread(state_);
    PyGILState_Release(gil_);  // the last release deletes the state
  }

 private:
  bool made_ = false;
  PyGILState_STATE gil_ = PyGILState_UNLOCKED;
  PyThreadState* state_ = nullptr;
};

thread_local worker_thread_state this_worker;

// Runs one Python callable; owns the reference. Never throws.
void run_python_task(PyObject* callable, int inner_threads) noexcept {
  const task_native_limits limits(scheduler::global(), inner_threads);  // native_policy.hpp
  if (!this_worker.ready()) return;  // Python is exiting: the callable (and its reference) is dropped
  PyGILState_STATE gil = PyGILState_Ensure();
  PyObject* result = PyObject_CallNoArgs(callable);
  if (result == nullptr) {
    // The pools capture task exceptions into their futures; this is a bug in corral itself.
    PyErr_WriteUnraisable(callable);
  } else {
    Py_DECREF(result);
  }
  Py_DECREF(callable);
  PyGILState_Release(gil);
}

void submit(nb::callable fn, int inner_threads) {
  scheduler& s = scheduler::global();
  // The pools' tasks may wait without saying so (a sleep, a socket): the scheduler's wait monitor
  // lends their slots. Turned on here rather than at import so that a child after fork(), which gets
  // a fresh global scheduler, has it too; a no-op (one relaxed load) once on.
  s.set_wait_monitor(true);
  PyObject* owned = fn.release().ptr();
  try {
    s.submit([owned, inner_threads]() noexcept { run_python_task(owned, inner_threads); });
  } catch (...) {
    Py_DECREF(owned);
    throw;
  }
}

// Main-thread waits wake this often to let Python run signal handlers (Ctrl-C).
constexpr std::chrono::milliseconds signal_check_interval{50};

unsigned long main_thread_ident = 0;

std::chrono::nanoseconds to_duration(double seconds) {
  if (!(seconds >= 0)) return std::chrono::nanoseconds::zero();  // negative or NaN: do not wait
  if (seconds > 1e9) seconds = 1e9;                                // ~31 years: no overflow
  return std::chrono::nanoseconds(static_cast<long long>(seconds * 1e9));
}

// corral::event for Python: wait releases the GIL; on a worker it runs other tasks meanwhile.
class python_event {
 public:
  void set() { event_.set(); }
  bool is_set() const { return event_.is_set(); }

  bool wait(std::optional<double> timeout) {
    if (event_.is_set()) return true;
    const bool on_main_thread = PyThread_get_thread_ident() == main_thread_ident;
    const auto deadline = timeout ? std::chrono::steady_clock::now() + to_duration(*timeout)
                                  : std::chrono::steady_clock::time_point::max();
    for (;;) {
      bool done;
      {
        nb::gil_scoped_release unlocked;  // the wait is announced: the scheduler hands the slot over
        if (!on_main_thread && !timeout) {
          event_.wait();
          done = true;
        } else {
          auto left = deadline - std::chrono::steady_clock::now();
          if (on_main_thread) left = std::min<std::chrono::steady_clock::duration>(left, signal_check_interval);
          done = event_.wait_for(std::max<std::chrono::steady_clock::duration>(left, {}));
        }
      }
      if (done) return true;
      if (on_main_thread && PyErr_CheckSignals() != 0) throw nb::python_error();
      if (std::chrono::steady_clock::now() >= deadline) return event_.is_set();
    }
  }

 private:
  event event_;
};

// blocking_scope for Python: enter() and exit() on the same thread (corral.blocking() sees to it).
class python_blocking_scope {
 public:
  void enter() {
    if (scope_) throw std::runtime_error("corral: this blocking scope is already entered");
    nb::gil_scoped_release unlocked;  // handing the slot over may wake another thread
    scope_.emplace();
  }
  void exit() {
    if (!scope_) throw std::runtime_error("corral: this blocking scope was not entered");
    nb::gil_scoped_release unlocked;  // taking a slot back may wait for one
    scope_.reset();
  }

 private:
  std::optional<blocking_scope> scope_;
};

nb::dict stats_dict() {
  const scheduler_stats s = scheduler::global().stats();
  nb::dict d;
  d["slots"] = s.slots;
  d["running"] = s.running;
  d["blocked"] = s.blocked;
  d["returning"] = s.returning;
  d["threads"] = s.threads;
  d["spares"] = s.spares;
  d["parked"] = s.parked;
  d["peak_threads"] = s.peak_threads;
  d["max_threads"] = s.max_threads;
  d["tasks_run"] = s.tasks_run;
  d["steals"] = s.steals;
  d["parks"] = s.parks;
  d["spares_started"] = s.spares_started;
  d["lent"] = s.lent;
  d["lends"] = s.lends;
  d["outside_helps"] = s.outside_helps;
  return d;
}

}  // namespace

void bind_scheduler(nb::module_& m) {
  main_thread_ident = nb::cast<unsigned long>(nb::module_::import_("threading").attr("main_thread")().attr("ident"));

  m.def("scheduler_submit", &submit, nb::arg("fn"), nb::arg("inner_threads") = 0,
        "Run fn() on a worker of the process-wide scheduler. fn must catch its own exceptions (one that "
        "escapes is reported as unraisable). inner_threads: 0 leaves BLAS/OpenMP limits alone, -1 sets "
        "max(1, slots // running tasks) for the task, n > 0 sets n.");
  m.def("on_scheduler_worker", [] { return scheduler::current() != nullptr; },
        "Whether the calling thread is a worker (or spare) of a corral scheduler.");
  m.def("scheduler_slots", [] { return scheduler::global().slots(); },
        "How many of the process-wide scheduler's threads may run tasks at once.");
  m.def(
      "set_scheduler_slots",
      [](long slots) {
        if (slots < 1) throw nb::value_error("corral: the scheduler needs at least 1 slot");
        const unsigned cap = scheduler::global().max_threads();
        if (static_cast<unsigned long>(slots) > cap)
          throw nb::value_error(("corral: at most " + std::to_string(cap) + " slots (the scheduler's max_threads)").c_str());
        scheduler::global().set_slots(static_cast<unsigned>(slots));
      },
      nb::arg("slots"), "Sets how many threads may run tasks at once (>= 1).");
  m.def("scheduler_lent_slots", [] { return scheduler::global().stats().lent; },
        "Slots lent now to tasks found waiting without announcing it (scheduler::options::monitor_waits).");
  m.def("scheduler_stats", &stats_dict, "The process-wide scheduler's counters, as a dict.");

  nb::class_<python_event>(m, "SchedulerEvent",
                           "A one-shot event; wait() releases the GIL and, on a corral worker, runs "
                           "other tasks meanwhile.")
      .def(nb::init<>())
      .def("set", &python_event::set)
      .def("is_set", &python_event::is_set)
      .def("wait", &python_event::wait, nb::arg("timeout") = nb::none(),
           "Waits until set (timeout in seconds, None: no limit); returns is_set().");

  nb::class_<python_blocking_scope>(m, "BlockingScope",
                                    "The calling worker gives its slot to a spare thread between "
                                    "enter() and exit(). Nested scopes, and scopes off workers, do nothing.")
      .def(nb::init<>())
      .def("enter", &python_blocking_scope::enter)
      .def("exit", &python_blocking_scope::exit);
}

}  // namespace corral::bindings
