// The permit table for corral's Python pools (permit_table.hpp): a task runs while its thread holds
// a permit; a wait gives it back. See src/corral/_permits.py for the Python view.
//
// GIL: taking a permit that is free costs a mutex and no GIL release; one that must be waited for
// is waited for with the GIL released (a waiting thread must not keep the holders from running).
#include <nanobind/stl/optional.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <thread>

#include "bindings.hpp"
#include "corral/native.hpp"
#include "corral/native_policy.hpp"
#include "corral/permit_table.hpp"

namespace corral::bindings {
namespace {

void take_permit(permit_table& table) {
  if (table.try_acquire()) return;
  PyThreadState* state = PyEval_SaveThread();
  try {
    table.acquire();
  } catch (...) {
    take_gil_back(state);
    throw;
  }
  take_gil_back(state);  // not in a destructor: see bindings.hpp
}

struct held_permit {
  explicit held_permit(permit_table& t) : table(t) { take_permit(table); }
  ~held_permit() { table.release(); }
  held_permit(const held_permit&) = delete;
  held_permit& operator=(const held_permit&) = delete;
  permit_table& table;
};

// What a pool tells run_permitted about a task: `inner` (0 leave alone, -1 dynamic, n > 0 fixed),
// and for the dynamic rule the pool's size and its queues of tasks not started yet.
struct task_spec {
  long inner = 0;
  long pool_threads = 0;
  // A list, empty until the pool's first task starts (which appends to it), or None: the pool
  // starts all its threads at once, and its queues already hold a burst's siblings.
  PyObject* first = nullptr;
  PyObject* put_queue = nullptr;  // the queue whose next put the first task may wait for
  // The queues' qsize, bound: called for every task, a bound method costs no attribute lookup (a
  // lookup on the queue was about a fifth of corral's own cost per item of imap_unordered).
  PyObject* const* sizes = nullptr;
  Py_ssize_t n_sizes = 0;
};

bool parse_spec(PyObject* spec, task_spec& out) {
  if (!PyTuple_Check(spec)) {
    out.inner = PyLong_AsLong(spec);
    return !(out.inner == -1 && PyErr_Occurred());
  }
  const Py_ssize_t n = PyTuple_GET_SIZE(spec);
  if (n < 3 || n == 4) {
    PyErr_SetString(PyExc_TypeError,
                    "run_permitted: a spec tuple is (inner, pool_threads, first[, put_queue, "
                    "*qsizes])");
    return false;
  }
  out.inner = PyLong_AsLong(PyTuple_GET_ITEM(spec, 0));
  if (out.inner == -1 && PyErr_Occurred()) return false;
  out.pool_threads = PyLong_AsLong(PyTuple_GET_ITEM(spec, 1));
  if (out.pool_threads == -1 && PyErr_Occurred()) return false;
  out.first = PyTuple_GET_ITEM(spec, 2);
  if (n > 3) {
    out.put_queue = PyTuple_GET_ITEM(spec, 3);
    out.sizes = &PyTuple_GET_ITEM(spec, 4);
    out.n_sizes = n - 4;
  }
  return true;
}

// Tasks queued in the pool's queues (their bound qsize()); a queue that cannot say counts 0.
// Called for every task of a map.
long queued_tasks(const task_spec& spec) {
  long queued = 0;
  for (Py_ssize_t i = 0; i < spec.n_sizes; ++i) {
    PyObject* size = PyObject_CallNoArgs(spec.sizes[i]);
    const long n = size != nullptr ? PyLong_AsLong(size) : -1;
    Py_XDECREF(size);
    if (n < 0) {
      PyErr_Clear();
      continue;
    }
    queued += n;
  }
  return queued;
}

// Whether the pool's first task has not started yet (a look: nothing is marked).
bool first_task_pending(const task_spec& spec) {
  return spec.first != nullptr && PyList_Check(spec.first) && PyList_GET_SIZE(spec.first) == 0;
}

// Whether this is the first task of its pool (true once per pool; under the GIL, so one thread).
bool first_task(const task_spec& spec) {
  if (!first_task_pending(spec)) return false;
  if (PyList_Append(spec.first, Py_True) != 0) {
    PyErr_Clear();
    return false;
  }
  return true;
}

// How long a pool's first task waits for its submitter to queue a sibling (run_permitted, below).
constexpr std::chrono::microseconds first_task_wait{1000};

// The task's BLAS/OpenMP limits, per the spec (run_permitted, below), in `limits`. A process with
// no BLAS/OpenMP library loaded has none to set: a map of tiny pure-Python items (W8, W11) skips
// the count, the queues' sizes and the limits' mutexes, and its tasks are not counted in the demand
// of later ones that find a library (docs/native.md, "Inner thread counts").
void start_limits(std::optional<task_native_limits>& limits, permit_table& table,
                  const task_spec& spec) {
  // Ends before the task runs: a library the task loads is found by the next task's look.
  native::single_loader_look one_look;
  if (spec.inner == 0 || !native::controller::process().has_libraries()) return;
  unsigned running = table.running();
  bool alone = table.alone();
  if (spec.inner < 0 && spec.n_sizes > 0) {
    long queued = queued_tasks(spec);
    // What the wait is for is a count a task keeps for its whole run: a per-thread control
    // (OpenMP's); a process-wide one (OpenBLAS's pthreads build) follows the siblings down
    // as they start. And a pool of one thread never runs two tasks at once.
    // (The library look comes after the cheap ones: it runs only for a pool's first task.)
    if (queued == 0 && spec.pool_threads > 1 && first_task_pending(spec) &&
        native::controller::process().has_thread_controls() && first_task(spec)) {
      // The first task of an executor (which starts a thread per submit): its submitter may
      // be queueing siblings right now. A moment for it, with the GIL released, before the
      // count is decided; once per pool. The submitter's next put ends the moment: a map
      // puts its second task some tens of microseconds after the first thread started, and
      // a pool made per outer task (W7) would otherwise hold a permit idle 1 ms each time.
      const std::optional<std::uint32_t> puts = work_queue_puts(spec.put_queue);
      if (puts && queued_tasks(spec) == 0) {  // the count read first: no put is missed
        wait_for_put(spec.put_queue, *puts, first_task_wait);
      } else if (!puts) {
        PyThreadState* state = PyEval_SaveThread();
        std::this_thread::sleep_for(first_task_wait);
        take_gil_back(state);
      }
      queued = queued_tasks(spec);
      one_look.look_again();  // a library loaded during the wait is limited now
      // A sibling's thread may have taken its task and a permit meanwhile, and not started it
      // yet: its permit is held (or kept), not yet running.
      running = std::max(running, table.running_or_starting());
    }
    if (queued > 0) {
      alone = false;
      const long pool = std::max(1L, spec.pool_threads);
      running = std::max<unsigned>(running,
                                   static_cast<unsigned>(std::min<long>(pool, running + queued)));
    }
  }
  limits.emplace(table.draw_for_inner_threads(), running, static_cast<int>(spec.inner), alone,
                 spec.put_queue);  // the pool's identity: its shutdown marker is put there
}

// run_permitted(spec, fn, /, *args, **kwargs): fn(*args, **kwargs) holding a permit, with the
// task's BLAS/OpenMP limits (native_policy.hpp). A vectorcall function of the C API rather than a
// nanobind one: the call forwards its arguments to fn as they came (no tuple, no dict), which is
// most of what a pool's tiny task costs (W8).
//
// The dynamic rule divides the budget by the tasks running now; a pool's tasks still queued count
// too (up to the pool's size). The first task of a burst would otherwise start alone and get the
// whole budget, and an OpenMP team keeps that count for the whole task (only its own thread can
// change it), beside the siblings that start a moment later: B + 1 threads on B cores, and a team
// whose barriers wait for a descheduled partner (docs/native.md, "Inner thread counts").
PyObject* run_permitted(PyObject*, PyObject* const* args, Py_ssize_t nargsf, PyObject* kwnames) {
  const Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
  if (nargs < 2) {
    PyErr_SetString(PyExc_TypeError,
                    "run_permitted(spec, fn, /, *args, **kwargs): missing arguments");
    return nullptr;
  }
  task_spec spec;
  if (!parse_spec(args[0], spec)) return nullptr;
  try {
    permit_table& table = permit_table::process();
    held_permit permit(table);
    std::optional<task_native_limits> limits;
    start_limits(limits, table, spec);
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
    "run_permitted(spec, fn, /, *args, **kwargs): fn(*args, **kwargs) on the calling thread while "
    "it holds one of the process's permits (waiting for one with the GIL released). spec: "
    "inner_threads, or (inner_threads, pool_threads, first[, put_queue, *qsizes]) (qsizes: the "
    "bound qsize methods of the pool's queues). inner_threads: 0 leaves "
    "BLAS/OpenMP "
    "limits alone, -1 sets max(1, permits // demand) for the call (demand: tasks running, and the "
    "tasks their qsizes() count, up to pool_threads), n > 0 sets n."};

// corral.blocking() and the wait hooks: enter() and exit() on the same thread.
class python_permit_pause {
 public:
  void enter() {
    if (pause_) throw std::runtime_error("corral: this pause is already entered");
    pause_.emplace();  // gives the permit back: wakes a waiter, never waits
  }
  // A C-API method (see bind_permits): its wait for a permit takes the GIL back outside nanobind's
  // dispatch, which a daemon thread's end at interpreter exit must not pass (bindings.hpp).
  static PyObject* exit(PyObject* self, PyObject*) {
    python_permit_pause* p = nb::inst_ptr<python_permit_pause>(self);
    if (!p->pause_) {
      PyErr_SetString(PyExc_RuntimeError, "corral: this pause was not entered");
      return nullptr;
    }
    if (!permit_pause::in_task()) {
      p->pause_.reset();
      Py_RETURN_NONE;
    }
    PyThreadState* state = PyEval_SaveThread();
    p->pause_.reset();  // taking a permit back may wait for one; never throws
    take_gil_back(state);
    Py_RETURN_NONE;
  }

 private:
  std::optional<permit_pause> pause_;
};

PyMethodDef permit_pause_exit_def = {
    "exit", &python_permit_pause::exit, METH_NOARGS,
    "Ends the pause: takes a permit back (waiting for one, first in line) if the thread is in a "
    "task."};

// threading.Semaphore(0)'s acquire/release for ThreadPoolExecutor._idle_semaphore: the stdlib calls
// acquire(timeout=0) on every submit and release() after every task, and its Semaphore is Python
// code around a Condition. Same semantics in a few instructions; a blocking acquire (which the
// stdlib never makes) waits with the GIL released.
class idle_count {
 public:
  // `work_queue`: the executor's (anything with empty()), or None.
  explicit idle_count(nb::object work_queue) : work_queue_(std::move(work_queue)) {}

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
    return without_gil([&] {
      std::unique_lock<std::mutex> relock(mutex_);
      const auto ready = [this] { return count_ > 0; };
      if (timeout) {
        if (!changed_.wait_for(relock, std::chrono::duration<double>(*timeout), ready))
          return false;
      } else {
        changed_.wait(relock, ready);
      }
      --count_;
      return true;
    });
  }
  void release(long n) {
    if (n < 1) throw nb::value_error("n must be one or more");
    {
      std::lock_guard<std::mutex> lock(mutex_);
      count_ += static_cast<unsigned long>(n);
    }
    changed_.notify_all();
    // The stdlib's worker calls release() after each task, then waits on the work queue: with none
    // queued, its permit kept for a next task (docs/permits.md, "Kept permits") goes back now
    // rather than when the monitor finds it idle, or when the thread ends after shutdown().
    if (work_queue_.is_valid() && !work_queue_.is_none() &&
        nb::cast<bool>(work_queue_.attr("empty")()))
      permit_table::process().give_back_kept();
  }
  unsigned long value() {
    std::lock_guard<std::mutex> lock(mutex_);
    return count_;
  }

 private:
  nb::object work_queue_;
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
  d["returning"] = s.returning;
  d["paused"] = s.paused;
  d["lent"] = s.lent;
  d["holders"] = s.holders;
  d["kept"] = s.kept;
  d["acquires"] = s.acquires;
  d["waits"] = s.waits;
  d["lends"] = s.lends;
  d["overdrafts"] = s.overdrafts;
  d["idle_admissions"] = s.idle_admissions;
  d["drawn"] = s.drawn;
  d["sourced"] = s.sourced;
  return d;
}

}  // namespace

void bind_permits(nb::module_& m) {
  // Positional-only, so that a task's own keyword arguments can never collide.
  m.attr("run_permitted") =
      nb::steal(PyCFunction_NewEx(&run_permitted_def, nullptr, nb::str("corral._core").ptr()));
  m.def(
      "call_with_short_waits",
      [](nb::callable fn, nb::args args) {
        short_waits scope;
        return fn(*args);
      },
      nb::arg("fn"), nb::arg("args"),
      "call_with_short_waits(fn, *args): fn(*args), its waits keeping the calling thread's permit "
      "(a thread's start; in_permit_task() is False meanwhile).");
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
      "end_idle_permit_monitor",
      [] { without_gil([] { permit_table::process().end_idle_monitor(); }); },
      "Ends the permit monitor's thread now when no thread holds, keeps or waits on a permit "
      "(before "
      "a fork: the threads plain python would have); the next task starts it again.");
  m.def(
      "set_inner_thread_cap", [](unsigned cap) { set_inner_thread_cap(cap); }, nb::arg("cap"),
      "An upper bound on every task's BLAS/OpenMP thread count (0: none); see native_policy.hpp.");
  m.def(
      "native_slots_changed",
      [](unsigned slots) { without_gil([&] { native_slots_changed(slots); }); }, nb::arg("slots"),
      "The permits the dynamic BLAS/OpenMP rule divides changed while tasks run: the process-wide "
      "count follows now (native_policy.hpp).");
  m.def(
      "native_share_changed",
      [](unsigned slots, unsigned threads) {
        without_gil([&] { native_share_changed(slots, threads); });
      },
      nb::arg("slots"), nb::arg("threads"),
      "The process's share changed: process-wide BLAS/OpenMP controls get `threads` with no task "
      "running (now, or when the last task ends), running tasks the dynamic rule over `slots`.");
  m.def("permit_stats", &stats_dict,
        "The process's permit table, as a dict of counters and gauges.");

  nb::class_<idle_count>(
      m, "IdleCount",
      "threading.Semaphore(0)'s acquire(blocking=True, timeout=None) and release(n=1), in C++ "
      "(ThreadPoolExecutor._idle_semaphore). IdleCount(work_queue=None): release() also gives back "
      "the permit the calling thread keeps for a next task when work_queue.empty().")
      .def(nb::init<nb::object>(), nb::arg("work_queue") = nb::none())
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
      .def("enter", &python_permit_pause::enter);
  nb::handle pause_type = m.attr("PermitPause");
  nb::object exit_method = nb::steal(
      PyDescr_NewMethod(reinterpret_cast<PyTypeObject*>(pause_type.ptr()), &permit_pause_exit_def));
  if (!exit_method.is_valid()) throw nb::python_error();
  nb::setattr(pause_type, "exit", exit_method);
}

}  // namespace corral::bindings
