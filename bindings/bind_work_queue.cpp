// The work queue of corral.ThreadPoolExecutor: queue.SimpleQueue whose pool threads claim their
// permit before they take a task (permit_table::claim; docs/permits.md, "Claims"). The stdlib's
// worker loop calls get_nowait() (3.13+) and get(block=True); with these, a thread that finds tasks
// queued and no permit free waits for the permit *before* it takes one, so that a task is never
// taken by a thread that cannot run it while a thread with a permit finds the queue empty. To the
// stdlib's loop the wait looks like a slow get (it counts the thread busy, as under plain python,
// where that thread would be running a task), and the queue holds what SimpleQueue holds.
//
// C-API functions wrapped as instance methods (they are called once per task; W8): the base
// class's own methods do the queueing.
#include <atomic>
#include <cstdint>
#include <utility>
#include <vector>

#include "bindings.hpp"
#include "corral/permit_table.hpp"

namespace corral::bindings {
namespace {

// Each WorkQueue's put() count, which its pool threads wait on when the queue is empty: waiting in
// SimpleQueue.get() would hand the next task to a thread that holds no permit, where this lets the
// thread look, claim its permit, then take the task. A thread reads the count before it looks at
// the queue and sleeps only while the count is unchanged (std::atomic::wait compares it in the
// kernel), so a put() between its look and its sleep is never missed; put() bumps it after the
// item is in the queue (release: the waker's item is visible to whoever sees the new count).
struct work_signal {
  std::atomic<std::uint32_t> puts{0};
};

// SimpleQueue's methods and queue.Empty, looked up once when the module loads.
PyObject* base_get = nullptr;
PyObject* base_get_nowait = nullptr;
PyObject* base_put = nullptr;
PyObject* base_empty = nullptr;
PyObject* empty_error = nullptr;

PyObject* signal_name = nullptr;  // "_signal", interned

// The queue's work_signal (a borrowed pointer; the queue holds the object), or nullptr with an
// exception set.
work_signal* signal_of(PyObject* self) {
  PyObject* attr = PyObject_GetAttr(self, signal_name);
  if (attr == nullptr) return nullptr;
  work_signal* signal = nb::inst_ptr<work_signal>(nb::handle(attr));
  Py_DECREF(attr);  // the queue's slot keeps it alive
  return signal;
}

PyObject* call_base(PyObject* method, PyObject* self) {
  return PyObject_Vectorcall(method, &self, 1, nullptr);
}

// Whether the queue is empty: 1, 0, or -1 with an exception set.
int queue_empty(PyObject* self) {
  PyObject* result = call_base(base_empty, self);
  if (result == nullptr) return -1;
  const int empty = PyObject_IsTrue(result);
  Py_DECREF(result);
  return empty;
}

// The queued item that comes first (a new reference); nullptr with an exception set on an error,
// or without one when the queue is empty.
PyObject* take_queued(PyObject* self) {
  PyObject* item = call_base(base_get_nowait, self);
  if (item == nullptr && PyErr_ExceptionMatches(empty_error)) PyErr_Clear();
  return item;
}

// The next task, taken once the calling thread has claimed a permit for it; `blocking`: wait for
// one when none is queued (get), else raise queue.Empty (get_nowait).
PyObject* take_with_claim(PyObject* self, bool blocking) {
  permit_table& table = permit_table::process();
  work_signal* signal = signal_of(self);
  if (signal == nullptr) return nullptr;
  for (;;) {
    const std::uint32_t puts = signal->puts.load(std::memory_order_acquire);
    if (table.keeps_permit_here()) {
      // Task after task on a kept permit (the common case): take the next one, if any, at once.
      if (PyObject* item = take_queued(self); item != nullptr || PyErr_Occurred()) return item;
    }
    const int empty = queue_empty(self);
    if (empty < 0) return nullptr;
    if (empty) {
      // Nothing queued: a permit kept from the last task goes back before the thread waits for
      // work (or reports none), and it looks again after the next put().
      table.give_back_kept();
      if (!blocking) return call_base(base_get_nowait, self);
      without_gil([&] { signal->puts.wait(puts, std::memory_order_acquire); });
      continue;
    }
    // A kept or free permit without a wait (GIL held), else a wait for one that lasts only while
    // nothing was put since `puts` was read: a shutdown marker put meanwhile (whose
    // recheck_claims() may have come before this claim queued) is seen. A claim ended by
    // recheck_claims() holds no permit: the thread takes what comes first, as the stdlib's loop
    // would (a task then waits for its permit in its acquire).
    if (!table.claim(false)) without_gil([&] { return table.claim(true, &signal->puts, puts); });
    if (PyObject* item = take_queued(self); item != nullptr || PyErr_Occurred()) return item;
    // another thread took it meanwhile: look again
  }
}

// Whether this call is the claiming kind: a pool thread that ran a task before (its first task is
// taken the plain way, and so is every call from a thread that never ran one: shutdown's drain
// from the caller's thread, an initializer's failure), not inside a task.
bool claims_here() {
  const permit_table& table = permit_table::process();
  return table.served_this_thread() && !table.held_by_this_thread();
}

// The base class's `method` called with self and the arguments as they came (positional, then
// the keyword values; at most a handful: get/put take three).
PyObject* forward(PyObject* method, PyObject* self, PyObject* const* args, Py_ssize_t nargs,
                  PyObject* kwnames) {
  const Py_ssize_t nkw = kwnames != nullptr ? PyTuple_GET_SIZE(kwnames) : 0;
  std::vector<PyObject*> stack;
  stack.reserve(static_cast<std::size_t>(1 + nargs + nkw));
  stack.push_back(self);
  stack.insert(stack.end(), args, args + nargs + nkw);
  return PyObject_Vectorcall(method, stack.data(), static_cast<std::size_t>(1 + nargs), kwnames);
}

// fn()'s result, with a C++ exception (a permit of another table held, no memory) turned into a
// Python RuntimeError.
template <class F>
PyObject* python_errors(F&& fn) {
  try {
    return fn();
  } catch (const std::exception& e) {
    PyErr_SetString(PyExc_RuntimeError, e.what());
    return nullptr;
  }
}

// get(block=True, timeout=None), a method of WorkQueue (self is the queue; args exclude it).
PyObject* work_queue_get(PyObject* self, PyObject* const* args, Py_ssize_t nargsf,
                         PyObject* kwnames) {
  const Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
  // Only the stdlib worker's own call, get() or get(block=True), claims; anything else is the
  // base class's.
  bool plain_blocking_get = false;
  const Py_ssize_t nkw = kwnames != nullptr ? PyTuple_GET_SIZE(kwnames) : 0;
  if (nargs + nkw == 0) {
    plain_blocking_get = true;
  } else if (nargs + nkw == 1) {
    const bool named_block =
        nkw == 0 || PyUnicode_CompareWithASCIIString(PyTuple_GET_ITEM(kwnames, 0), "block") == 0;
    plain_blocking_get = named_block && args[0] == Py_True;
  }
  return python_errors([&] {
    if (plain_blocking_get && claims_here()) return take_with_claim(self, true);
    return forward(base_get, self, args, nargs, kwnames);
  });
}

// get_nowait()
PyObject* work_queue_get_nowait(PyObject* self, PyObject* const* args, Py_ssize_t nargsf,
                                PyObject* kwnames) {
  const Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
  return python_errors([&] {
    if (nargs == 0 && kwnames == nullptr && claims_here()) return take_with_claim(self, false);
    return forward(base_get_nowait, self, args, nargs, kwnames);
  });
}

// put(item, block=True, timeout=None): the base class's; a None (the executor's shutdown marker,
// also put at interpreter exit) wakes this queue's threads and ends this queue's waiting claims, so
// that threads waiting for a permit see it at once, whatever other pools hold the permits.
PyObject* work_queue_put(PyObject* self, PyObject* const* args, Py_ssize_t nargsf,
                         PyObject* kwnames) {
  const Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
  PyObject* result = python_errors([&] { return forward(base_put, self, args, nargs, kwnames); });
  if (result == nullptr) return nullptr;
  work_signal* signal = signal_of(self);
  if (signal == nullptr) {
    Py_DECREF(result);
    return nullptr;
  }
  signal->puts.fetch_add(1, std::memory_order_release);
  bool marker = nargs >= 1 && args[0] == Py_None;
  for (Py_ssize_t i = 0; nargs == 0 && kwnames != nullptr && i < PyTuple_GET_SIZE(kwnames); ++i)
    if (PyUnicode_CompareWithASCIIString(PyTuple_GET_ITEM(kwnames, i), "item") == 0)
      marker = args[i] == Py_None;
  if (marker) {
    // The shutdown marker: every thread looks (each takes its own marker in turn, as the stdlib's
    // loop puts it back for the next), those waiting for a permit too.
    signal->puts.notify_all();
    permit_table::process().recheck_claims(&signal->puts);  // this queue's claims only
  } else {
    signal->puts.notify_one();
  }
  return result;
}

PyMethodDef get_def = {
    "get", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(&work_queue_get)),
    METH_FASTCALL | METH_KEYWORDS,
    "queue.SimpleQueue.get; a pool thread's get(block=True) claims its permit before it takes a "
    "task."};
PyMethodDef get_nowait_def = {
    "get_nowait",
    reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(&work_queue_get_nowait)),
    METH_FASTCALL | METH_KEYWORDS,
    "queue.SimpleQueue.get_nowait; a pool thread's claims its permit before it takes a task (it "
    "may wait for the permit while tasks are queued)."};
PyMethodDef put_def = {
    "put", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(&work_queue_put)),
    METH_FASTCALL | METH_KEYWORDS,
    "queue.SimpleQueue.put; putting None (the shutdown marker) ends this queue's waiting claims."};

// Puts get, get_nowait and put on `cls` (corral._work_queue.WorkQueue) as method descriptors, as
// SimpleQueue's own are: `q.get()` then binds no method object (W8 calls two of them per task).
void install_methods(nb::handle cls) {
  if (!PyType_Check(cls.ptr()) ||
      !PyType_IsSubtype(
          reinterpret_cast<PyTypeObject*>(cls.ptr()),
          reinterpret_cast<PyTypeObject*>(nb::module_::import_("queue").attr("SimpleQueue").ptr())))
    throw nb::type_error("install_work_queue_methods: a subclass of queue.SimpleQueue");
  auto* type = reinterpret_cast<PyTypeObject*>(cls.ptr());
  for (PyMethodDef* def : {&get_def, &get_nowait_def, &put_def}) {
    nb::object descriptor = nb::steal(PyDescr_NewMethod(type, def));
    if (!descriptor.is_valid()) throw nb::python_error();
    cls.attr(def->ml_name) = descriptor;
  }
}

}  // namespace

void bind_work_queue(nb::module_& m) {
  nb::module_ queue = nb::module_::import_("queue");
  nb::object simple_queue = queue.attr("SimpleQueue");
  // Kept for the module's life (never released: the module is never unloaded).
  const auto keep = [](nb::object o) { return o.release().ptr(); };
  base_get = keep(simple_queue.attr("get"));
  base_get_nowait = keep(simple_queue.attr("get_nowait"));
  base_put = keep(simple_queue.attr("put"));
  base_empty = keep(simple_queue.attr("empty"));
  empty_error = keep(queue.attr("Empty"));
  signal_name = PyUnicode_InternFromString("_signal");
  nb::class_<work_signal>(
      m, "WorkSignal", "What a WorkQueue's pool threads wait on while it is empty (a put count).")
      .def(nb::init<>());
  m.def("install_work_queue_methods", &install_methods, nb::arg("cls"),
        "Puts the claiming get, get_nowait and put on a queue.SimpleQueue subclass.");
}

}  // namespace corral::bindings
