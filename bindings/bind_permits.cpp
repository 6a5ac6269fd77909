// The permit table for corral's Python pools (permit_table.hpp): a task runs while its thread holds
// a permit; a wait gives it back. See src/corral/_permits.py for the Python view.
//
// GIL: taking a permit that is free costs a mutex and no GIL release; one that must be waited for
// is waited for with the GIL released (a waiting thread must not keep the holders from running).
#include <nanobind/stl/optional.h>

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <stdexcept>

#include "bindings.hpp"
#include "corral/native_policy.hpp"
#include "corral/permit_table.hpp"

namespace corral::bindings {
namespace {

void take_permit(permit_table& table) {
  if (table.try_acquire()) return;
  nb::gil_scoped_release unlocked;
  table.acquire();
}

struct held_permit {
  explicit held_permit(permit_table& t) : table(t) { take_permit(table); }
  ~held_permit() { table.release(); }
  held_permit(const held_permit&) = delete;
  held_permit& operator=(const held_permit&) = delete;
  permit_table& table;
};

// run_permitted(inner_threads, fn, /, *args, **kwargs): fn(*args, **kwargs) holding a permit, with
// the task's BLAS/OpenMP limits (native_policy.hpp). A vectorcall function of the C API rather than
// a nanobind one: the call forwards its arguments to fn as they came (no tuple, no dict), which is
// most of what a pool's tiny task costs (W8).
PyObject* run_permitted(PyObject*, PyObject* const* args, Py_ssize_t nargsf, PyObject* kwnames) {
  const Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
  if (nargs < 2) {
    PyErr_SetString(PyExc_TypeError,
                    "run_permitted(inner_threads, fn, /, *args, **kwargs): missing arguments");
    return nullptr;
  }
  const long inner_threads = PyLong_AsLong(args[0]);
  if (inner_threads == -1 && PyErr_Occurred()) return nullptr;
  try {
    permit_table& table = permit_table::process();
    held_permit permit(table);
    std::optional<task_native_limits> limits;
    if (inner_threads != 0)
      limits.emplace(table.permits(), table.running(), static_cast<int>(inner_threads),
                     table.alone());
    return PyObject_Vectorcall(args[1], args + 2, static_cast<size_t>(nargs - 2), kwnames);
  } catch (const std::invalid_argument& e) {  // a malformed CORRAL_CPUS (what nanobind raises)
    PyErr_SetString(PyExc_ValueError, e.what());
    return nullptr;
  } catch (const std::exception& e) {  // a permit of another table held, no memory
    PyErr_SetString(PyExc_RuntimeError, e.what());
    return nullptr;
  }
}

PyMethodDef run_permitted_def = {
    "run_permitted", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(&run_permitted)),
    METH_FASTCALL | METH_KEYWORDS,
    "run_permitted(inner_threads, fn, /, *args, **kwargs): fn(*args, **kwargs) on the calling "
    "thread while it holds one of the process's permits (waiting for one with the GIL released). "
    "inner_threads: 0 leaves BLAS/OpenMP limits alone, -1 sets max(1, permits // running) for the "
    "call, n > 0 sets n."};

// corral.blocking() and the wait hooks: enter() and exit() on the same thread.
class python_permit_pause {
 public:
  void enter() {
    if (pause_) throw std::runtime_error("corral: this pause is already entered");
    pause_.emplace();  // gives the permit back: wakes a waiter, never waits
  }
  void exit() {
    if (!pause_) throw std::runtime_error("corral: this pause was not entered");
    if (!permit_pause::in_task()) {
      pause_.reset();
      return;
    }
    nb::gil_scoped_release unlocked;  // taking a permit back may wait for one
    pause_.reset();
  }

 private:
  std::optional<permit_pause> pause_;
};

// threading.Semaphore(0)'s acquire/release for ThreadPoolExecutor._idle_semaphore: the stdlib calls
// acquire(timeout=0) on every submit and release() after every task, and its Semaphore is Python
// code around a Condition. Same semantics in a few instructions; a blocking acquire (which the
// stdlib never makes) waits with the GIL released.
class idle_count {
 public:
  bool acquire(bool blocking, std::optional<double> timeout) {
    if (!blocking && timeout)
      throw nb::value_error("can't specify timeout for non-blocking acquire");
    std::unique_lock<std::mutex> lock(mutex_);
    if (count_ > 0) {
      --count_;
      return true;
    }
    if (!blocking || (timeout && *timeout <= 0)) return false;
    lock.unlock();
    nb::gil_scoped_release unlocked;
    lock.lock();
    const auto ready = [this] { return count_ > 0; };
    if (timeout) {
      if (!changed_.wait_for(lock, std::chrono::duration<double>(*timeout), ready)) return false;
    } else {
      changed_.wait(lock, ready);
    }
    --count_;
    return true;
  }
  void release(long n) {
    if (n < 1) throw nb::value_error("n must be one or more");
    {
      std::lock_guard<std::mutex> lock(mutex_);
      count_ += static_cast<unsigned long>(n);
    }
    changed_.notify_all();
  }
  unsigned long value() {
    std::lock_guard<std::mutex> lock(mutex_);
    return count_;
  }

 private:
  std::mutex mutex_;
  std::condition_variable changed_;
  unsigned long count_ = 0;
};

nb::dict stats_dict() {
  const permit_stats s = permit_table::process().stats();
  nb::dict d;
  d["permits"] = s.permits;
  d["held"] = s.held;
  d["waiting"] = s.waiting;
  d["paused"] = s.paused;
  d["lent"] = s.lent;
  d["holders"] = s.holders;
  d["kept"] = s.kept;
  d["acquires"] = s.acquires;
  d["waits"] = s.waits;
  d["lends"] = s.lends;
  d["overdrafts"] = s.overdrafts;
  return d;
}

}  // namespace

void bind_permits(nb::module_& m) {
  // Positional-only, so that a task's own keyword arguments can never collide.
  m.attr("run_permitted") =
      nb::steal(PyCFunction_NewEx(&run_permitted_def, nullptr, nb::str("corral._core").ptr()));
  m.def("in_permit_task", &permit_pause::in_task,
        "Whether the calling thread is inside run_permitted (holding, or having given back, a "
        "permit).");
  m.def(
      "permits", [] { return permit_table::process().permits(); },
      "How many threads of this process may run corral tasks at once (the budget).");
  m.def(
      "set_permits",
      [](long n) {
        if (n < 1) throw nb::value_error("corral: at least 1 permit");
        permit_table::process().set_permits(static_cast<unsigned>(std::min<long>(n, 1 << 20)));
      },
      nb::arg("n"), "Sets how many threads may run corral tasks at once (>= 1).");
  m.def(
      "set_permit_monitor", [](bool on) { permit_table::process().set_wait_monitor(on); },
      nb::arg("on"),
      "Starts or stops the thread that lends the permits of tasks found asleep in a system call.");
  m.def(
      "set_inner_thread_cap", [](unsigned cap) { set_inner_thread_cap(cap); }, nb::arg("cap"),
      "An upper bound on every task's BLAS/OpenMP thread count (0: none); see native_policy.hpp.");
  m.def("permit_stats", &stats_dict,
        "The process's permit table, as a dict of counters and gauges.");

  nb::class_<idle_count>(
      m, "IdleCount",
      "threading.Semaphore(0)'s acquire(blocking=True, timeout=None) and release(n=1), in C++ "
      "(ThreadPoolExecutor._idle_semaphore).")
      .def(nb::init<>())
      .def("acquire", &idle_count::acquire, nb::arg("blocking") = true,
           nb::arg("timeout") = nb::none())
      .def("release", &idle_count::release, nb::arg("n") = 1)
      .def("__enter__", [](idle_count& c) { return c.acquire(true, std::nullopt); })
      .def("__exit__", [](idle_count& c, nb::args) { c.release(1); })
      .def_prop_ro("_value", &idle_count::value);

  nb::class_<python_permit_pause>(
      m, "PermitPause",
      "Between enter() and exit() the calling thread holds no permit (if it "
      "held one); exit() takes one back, ahead of tasks not yet started.")
      .def(nb::init<>())
      .def("enter", &python_permit_pause::enter)
      .def("exit", &python_permit_pause::exit);
}

}  // namespace corral::bindings
