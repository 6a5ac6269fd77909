// The work queue of corral.ThreadPoolExecutor and corral.ThreadPool: queue.SimpleQueue, with two
// things added for the pools' threads (docs/permits.md, "Taking tasks"):
//   * a thread that finds the queue empty gives back the permit it kept from its last task before
//     it waits for work (or reports none), so that a permit never idles with a thread that has no
//     task while another thread holds one and waits;
//   * threads waiting for work sleep on a stack, and a put() wakes the one that went to sleep last.
// A thread takes a task as SimpleQueue's get() takes it: the task is then RUNNING, as under plain
// python, and waits for a permit in run_permitted, inside the stdlib's _WorkItem.run.
//
// C-API functions wrapped as instance methods (they are called once per task; W8): the base
// class's own methods do the queueing.
#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <new>
#include <utility>
#include <vector>

#include "bindings.hpp"
#include "corral/native_policy.hpp"
#include "corral/permit_table.hpp"

// After Python.h (bindings.hpp): T_OBJECT_EX (3.11; also Py_T_OBJECT_EX from 3.12).
#include <structmember.h>

namespace corral::bindings {
namespace {

// What a WorkQueue's pool threads wait on while it is empty.
//
// Sleepers wait on a stack, newest on top, and a wake-up goes to the newest: the thread that ran
// last, whose caches and malloc arena are warm (threads that never ran a task wait below, oldest
// first) (the kernel's futex queue would wake the one asleep
// longest: W3's 16 threads then took turns, each task on a cold thread, 5-10% slower). A put()
// wakes one sleeper, as SimpleQueue's put() releases one waiter, and a thread that took a task
// while more remain wakes one more if none is on its way (puts made while no thread slept).
//
// The stack and the counts are guarded by the signal's own mutex, never held while Python runs or
// while waiting for the GIL (the GIL is not relied on: the module declares free-threading support).
// A sleeper checks, under the mutex, that nothing was put since it looked at the queue before it
// pushes itself, and put() bumps the count before it takes the mutex to wake one, so no put falls
// between a look and a sleep. A waker stores the sleeper's word and notifies it under the mutex,
// and the sleeper takes the mutex once awake before it returns, so its frame (which holds the word)
// outlives the notify.
struct work_signal {
  // put() count: a thread sleeps only while it is unchanged since the thread looked at the queue.
  std::atomic<std::uint32_t> puts{0};

  std::mutex mutex;                                   // guards what follows
  std::vector<std::atomic<std::uint32_t>*> sleepers;  // newest last
  std::uint32_t waking = 0;  // woken to come to the queue, not yet looking at it
  // A pool's first task waiting for its submitter's next put (wait_for_put): woken by any put.
  std::condition_variable put_seen;
  std::uint32_t put_watchers = 0;
  unsigned forks_seen = 0;  // fork_count when all of this was last right

  static constexpr std::uint32_t woken_one = 1;  // counted in `waking`
  static constexpr std::uint32_t woken_all = 2;  // by wake_all()

  // Wakes the newest sleeper; `if_none_waking`: only if no woken thread is on its way already.
  void wake_newest(bool if_none_waking) noexcept {
    std::lock_guard<std::mutex> lock(mutex);
    if (put_watchers != 0) put_seen.notify_all();
    if (sleepers.empty() || (if_none_waking && waking != 0)) return;
    std::atomic<std::uint32_t>* word = sleepers.back();
    sleepers.pop_back();
    ++waking;
    word->store(woken_one, std::memory_order_release);
    word->notify_one();
  }

  void wake_all() noexcept {
    std::lock_guard<std::mutex> lock(mutex);
    if (put_watchers != 0) put_seen.notify_all();
    for (std::atomic<std::uint32_t>* word : sleepers) {
      word->store(woken_all, std::memory_order_release);
      word->notify_one();
    }
    sleepers.clear();
  }

  // Sleeps until woken, if nothing was put since `seen` was read; `fresh`: the thread has not taken
  // a task yet, and sleeps below every thread that has, behind the fresh ones before it. GIL held
  // on entry and on return (released meanwhile).
  void sleep(std::uint32_t seen, bool fresh) {
    std::atomic<std::uint32_t> word{0};
    {
      std::lock_guard<std::mutex> lock(mutex);
      if (puts.load(std::memory_order_acquire) != seen) return;
      // A new pool's threads are woken in the order they started, as plain python's take their
      // first tasks (a ThreadPool's first task runs on its first thread); after that, the warmest.
      sleepers.insert(fresh ? sleepers.begin() : sleepers.end(), &word);
    }
    without_gil([&] { word.wait(0, std::memory_order_acquire); });
    std::lock_guard<std::mutex> lock(mutex);  // the waker is done with `word`
    if (word.load(std::memory_order_relaxed) == woken_one) --waking;
  }

  // Until the put count moves from `seen` or `limit` passes (GIL released by the caller). put()
  // bumps the count before it takes the mutex to notify, and the count is read under the mutex:
  // no put falls between the look and the wait.
  void wait_for_put(std::uint32_t seen, std::chrono::microseconds limit) {
    std::unique_lock<std::mutex> lock(mutex);
    ++put_watchers;
    put_seen.wait_for(lock, limit, [&] { return puts.load(std::memory_order_acquire) != seen; });
    --put_watchers;
  }
};

// Children forked so far down this line of processes: a forked child has none of the parent's
// pool threads (only the forking thread lives on), so a queue's sleepers and counts, and its
// mutex (which a parent's thread may have held at the fork), start afresh on its first use there.
std::atomic<unsigned> fork_count{0};

// The queue's work_signal (see signal_of) as of this process.
work_signal* current(work_signal* signal) {
  const unsigned forks = fork_count.load(std::memory_order_relaxed);
  if (signal != nullptr && signal->forks_seen != forks) {
    new (&signal->mutex) std::mutex;  // its parent's state is meaningless here
    new (&signal->put_seen) std::condition_variable;
    signal->sleepers.clear();
    signal->waking = signal->put_watchers = 0;
    signal->forks_seen = forks;
  }
  return signal;
}

// SimpleQueue's methods and queue.Empty, looked up once when the module loads.
PyObject* base_get = nullptr;
PyObject* base_get_nowait = nullptr;
PyObject* base_put = nullptr;
PyObject* base_empty = nullptr;
PyObject* empty_error = nullptr;

PyObject* signal_name = nullptr;  // "_signal", interned

// WorkQueue, its `_signal` slot's offset in its instances, and WorkSignal (install_methods): put
// and get read the slot directly from a WorkQueue (an attribute lookup was 200 instructions, a
// tenth of corral's cost per item of imap_unordered); a subclass's instance takes the lookup.
PyTypeObject* work_queue_type = nullptr;
Py_ssize_t signal_offset = 0;
PyTypeObject* work_signal_type = nullptr;

// The queue's work_signal (a borrowed pointer; the queue holds the object), or nullptr with an
// exception set.
work_signal* signal_of(PyObject* self) {
  if (Py_TYPE(self) == work_queue_type) {
    PyObject* slot = *reinterpret_cast<PyObject**>(reinterpret_cast<char*>(self) + signal_offset);
    if (slot != nullptr && Py_TYPE(slot) == work_signal_type && nb::inst_ready(nb::handle(slot)))
      return current(nb::inst_ptr<work_signal>(nb::handle(slot)));
  }
  PyObject* attr = PyObject_GetAttr(self, signal_name);
  if (attr == nullptr) return nullptr;
  // A program may have put anything there (or a WorkSignal never initialised): refused, not read.
  if (!nb::isinstance<work_signal>(nb::handle(attr)) || !nb::inst_ready(nb::handle(attr))) {
    Py_DECREF(attr);
    PyErr_SetString(PyExc_TypeError, "corral's work queue: _signal is not a WorkSignal");
    return nullptr;
  }
  work_signal* signal = nb::inst_ptr<work_signal>(nb::handle(attr));
  Py_DECREF(attr);  // the queue's slot keeps it alive
  return current(signal);
}

// The queue's work_signal if it is a WorkQueue, else nullptr (no exception left set).
work_signal* signal_if_work_queue(PyObject* queue) {
  if (signal_name == nullptr) return nullptr;
  work_signal* signal = signal_of(queue);
  if (signal == nullptr) PyErr_Clear();
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

// Whether the calling thread took an item from a WorkQueue (a pool thread serves one queue): until
// then it sleeps below the threads that have (work_signal::sleep).
thread_local bool took_a_task = false;

// get(block=True) of a pool thread: the next task, taken at once as SimpleQueue's get() takes it;
// while none is queued, the permit kept from the thread's last task goes back and the thread sleeps
// until a put() wakes it.
PyObject* take_next(PyObject* self) {
  work_signal* signal = signal_of(self);
  if (signal == nullptr) return nullptr;
  for (;;) {
    const std::uint32_t puts = signal->puts.load(std::memory_order_acquire);
    if (PyObject* item = take_queued(self); item != nullptr || PyErr_Occurred()) {
      if (item != nullptr) {
        const int rest_empty = queue_empty(self);
        if (rest_empty < 0) {
          Py_DECREF(item);
          return nullptr;
        }
        if (!rest_empty) signal->wake_newest(true);  // tasks remain: the next taker
        took_a_task = true;
      }
      return item;
    }
    permit_table::process().give_back_kept();
    signal->sleep(puts, !took_a_task);
  }
}

// The base class's `method` called with self and the arguments as they came (positional, then
// the keyword values; at most a handful: get/put take three).
PyObject* forward(PyObject* method, PyObject* self, PyObject* const* args, Py_ssize_t nargs,
                  PyObject* kwnames) {
  const Py_ssize_t nkw = kwnames != nullptr ? PyTuple_GET_SIZE(kwnames) : 0;
  const auto count = static_cast<std::size_t>(1 + nargs + nkw);
  // put(item) and get(): a few arguments, on the stack (a vector's allocation was a tenth of a
  // put's cost); more only from a caller that spells out every keyword.
  constexpr std::size_t on_stack = 8;
  PyObject* small[on_stack];
  std::vector<PyObject*> large;
  PyObject** stack = small;
  if (count > on_stack) {
    large.resize(count);
    stack = large.data();
  }
  stack[0] = self;
  std::copy(args, args + nargs + nkw, stack + 1);
  return PyObject_Vectorcall(method, stack, static_cast<std::size_t>(1 + nargs), kwnames);
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
  // Only the stdlib worker's own call, get() or get(block=True), sleeps on the stack; anything
  // else is the base class's.
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
    if (plain_blocking_get) return take_next(self);
    return forward(base_get, self, args, nargs, kwnames);
  });
}

// get_nowait(): the base class's; when it finds the queue empty, a permit the calling thread kept
// from its last task goes back (3.13+'s worker loop looks with it before it counts itself idle).
PyObject* work_queue_get_nowait(PyObject* self, PyObject* const* args, Py_ssize_t nargsf,
                                PyObject* kwnames) {
  const Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
  PyObject* item =
      python_errors([&] { return forward(base_get_nowait, self, args, nargs, kwnames); });
  if (item != nullptr) took_a_task = true;  // 3.13+'s worker loop takes tasks with it too
  if (item == nullptr && PyErr_ExceptionMatches(empty_error))
    permit_table::process().give_back_kept();
  return item;
}

// put(item, block=True, timeout=None): the base class's; a None (the executor's shutdown marker,
// also put at interpreter exit) wakes all of this queue's sleeping threads.
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
  bool marker = nargs >= 1 && args[0] == Py_None;
  for (Py_ssize_t i = 0; nargs == 0 && kwnames != nullptr && i < PyTuple_GET_SIZE(kwnames); ++i)
    if (PyUnicode_CompareWithASCIIString(PyTuple_GET_ITEM(kwnames, i), "item") == 0)
      marker = args[i] == Py_None;
  signal->puts.fetch_add(1, std::memory_order_release);
  if (marker) {
    // The shutdown marker: every thread looks (each takes its own marker in turn, as the stdlib's
    // loop puts it back for the next).
    signal->wake_all();
    pool_shut_down(self);  // this pool's: a lone task next gets its inner threads at once
  } else {
    signal->wake_newest(false);  // one sleeper per put, as SimpleQueue's put() releases one
  }
  return result;
}

PyMethodDef get_def = {
    "get", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(&work_queue_get)),
    METH_FASTCALL | METH_KEYWORDS,
    "queue.SimpleQueue.get; a pool thread's get(block=True) gives back the permit it kept from its "
    "last task before it waits for work."};
PyMethodDef get_nowait_def = {
    "get_nowait",
    reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(&work_queue_get_nowait)),
    METH_FASTCALL | METH_KEYWORDS,
    "queue.SimpleQueue.get_nowait; when the queue is empty, the calling thread gives back the "
    "permit "
    "it kept from its last task."};
PyMethodDef put_def = {
    "put", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(&work_queue_put)),
    METH_FASTCALL | METH_KEYWORDS,
    "queue.SimpleQueue.put; wakes the pool thread that went to sleep last (None: all of them)."};

// Puts get, get_nowait and put on `cls` (corral._work_queue.WorkQueue) as method descriptors, as
// SimpleQueue's own are: `q.get()` then binds no method object (W8 calls two of them per task).
void install_methods(nb::handle cls) {
  if (!PyType_Check(cls.ptr()) ||
      !PyType_IsSubtype(reinterpret_cast<PyTypeObject*>(cls.ptr()),
                        reinterpret_cast<PyTypeObject*>(
                            nb::module_::import_("_queue").attr("SimpleQueue").ptr())))
    throw nb::type_error("install_work_queue_methods: a subclass of queue.SimpleQueue");
  auto* type = reinterpret_cast<PyTypeObject*>(cls.ptr());
  for (PyMethodDef* def : {&get_def, &get_nowait_def, &put_def}) {
    nb::object descriptor = nb::steal(PyDescr_NewMethod(type, def));
    if (!descriptor.is_valid()) throw nb::python_error();
    cls.attr(def->ml_name) = descriptor;
  }
  // `__slots__ = ("_signal",)`: a member descriptor holding an object. The first class installed
  // gets the direct read (there is one); anything else takes the lookup.
  nb::object slot = nb::getattr(cls, nb::handle(signal_name), nb::none());
  if (work_queue_type == nullptr && Py_IS_TYPE(slot.ptr(), &PyMemberDescr_Type)) {
    const PyMemberDef* member = reinterpret_cast<PyMemberDescrObject*>(slot.ptr())->d_member;
    if (member->type == T_OBJECT_EX && member->offset > 0) {
      work_queue_type = reinterpret_cast<PyTypeObject*>(cls.inc_ref().ptr());  // kept for good
      signal_offset = member->offset;
    }
  }
}

}  // namespace

std::optional<std::uint32_t> work_queue_puts(PyObject* queue) {
  work_signal* signal = signal_if_work_queue(queue);
  if (signal == nullptr) return std::nullopt;
  return signal->puts.load(std::memory_order_acquire);
}

void wait_for_put(PyObject* queue, std::uint32_t seen, std::chrono::microseconds limit) {
  work_signal* signal = signal_if_work_queue(queue);
  if (signal == nullptr) return;
  Py_INCREF(queue);  // keeps the signal alive while the GIL is released
  without_gil([&] { signal->wait_for_put(seen, limit); });
  Py_DECREF(queue);
}

void bind_work_queue(nb::module_& m) {
  // _queue, the C module queue.SimpleQueue and queue.Empty come from (3.7-3.14): importing queue.py
  // would import threading at every start of a child Python (docs/architecture.md, "Start-up").
  nb::module_ queue = nb::module_::import_("_queue");
  nb::object simple_queue = queue.attr("SimpleQueue");
  // Kept for the module's life (never released: the module is never unloaded).
  const auto keep = [](nb::object o) { return o.release().ptr(); };
  base_get = keep(simple_queue.attr("get"));
  base_get_nowait = keep(simple_queue.attr("get_nowait"));
  base_put = keep(simple_queue.attr("put"));
  base_empty = keep(simple_queue.attr("empty"));
  empty_error = keep(queue.attr("Empty"));
  signal_name = PyUnicode_InternFromString("_signal");
  pthread_atfork(nullptr, nullptr, [] { fork_count.fetch_add(1, std::memory_order_relaxed); });
  nb::class_<work_signal> signal_class(
      m, "WorkSignal",
      "What a WorkQueue's pool threads sleep on (a put count and a stack of sleepers).");
  signal_class.def(nb::init<>());
  work_signal_type = reinterpret_cast<PyTypeObject*>(signal_class.ptr());
  m.def("install_work_queue_methods", &install_methods, nb::arg("cls"),
        "Puts the pools' get, get_nowait and put on a queue.SimpleQueue subclass.");
}

}  // namespace corral::bindings
