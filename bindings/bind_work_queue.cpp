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

// What a WorkQueue's pool threads wait on while it is empty, or while another of them claims:
// waiting in SimpleQueue.get() would hand the next task to a thread that holds no permit, where
// this lets the thread look, claim its permit, then take the task.
//
// Sleepers wait on a stack, newest on top, and a wake-up goes to the newest: the thread that ran
// last, whose caches and malloc arena are warm (the kernel's futex queue would wake the one asleep
// longest: W3's 16 threads then took turns, each task on a cold thread, 5-10% slower). Only one
// thread at a time is on its way to the queue: a put() wakes a sleeper only when no thread claims
// and none is already woken (`waking`), and a thread that claimed its permit wakes the next only
// if tasks remain. So a pool of 16 threads on a budget of 2 runs task after task on its 2 keepers
// with at most one claimer waiting, instead of waking all 16 at every burst of puts.
//
// The stack and the counts are guarded by the signal's own mutex, never held while Python runs or
// while waiting for the GIL (the GIL is not relied on: the module declares free-threading support).
// A sleeper checks, under the mutex, that nothing was put since it looked at the queue before it
// pushes itself, and put() bumps the count before it takes the mutex to wake one, so no put falls
// between a look and a sleep. A waker stores the sleeper's word and notifies it under the mutex,
// and the sleeper takes the mutex once awake before it returns, so its frame (which holds the word)
// outlives the notify.
struct work_signal {
  // put() count: a thread sleeps, and a claim waits, only while it is unchanged since the thread
  // looked at the queue (a claim: the shutdown marker's recheck_claims() may come before it
  // queues).
  std::atomic<std::uint32_t> puts{0};
  std::atomic<bool> shutting_down{false};  // a None (the shutdown marker) was put

  std::mutex mutex;                                   // guards what follows
  std::vector<std::atomic<std::uint32_t>*> sleepers;  // newest last
  std::uint32_t waking = 0;    // woken to come to the queue, not yet looking at it
  std::uint32_t claimers = 0;  // this queue's threads inside a claim's wait
  // A pool's first task waiting for its submitter's next put (wait_for_put): woken by any put.
  std::condition_variable put_seen;
  std::uint32_t put_watchers = 0;
  unsigned forks_seen = 0;  // fork_count when all of this was last right

  static constexpr std::uint32_t woken_one = 1;  // counted in `waking`
  static constexpr std::uint32_t woken_all = 2;  // by wake_all()

  // Wakes the newest sleeper if one more thread should come to the queue now: none claims and none
  // is already on its way.
  void wake_newest_if_wanted() noexcept {
    std::lock_guard<std::mutex> lock(mutex);
    if (put_watchers != 0) put_seen.notify_all();
    if (sleepers.empty() || claimers != 0 || waking != 0) return;
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

  // Sleeps until woken: behind another thread that claims (`behind_a_claimer`) if one still does,
  // else if nothing was put since `seen` was read; false when it did not sleep. GIL held on entry
  // and on return (released meanwhile).
  bool sleep(std::uint32_t seen, bool behind_a_claimer) {
    std::atomic<std::uint32_t> word{0};
    {
      std::lock_guard<std::mutex> lock(mutex);
      // Behind a claimer a put meanwhile changes nothing: it woke nobody, the claimer will.
      if (behind_a_claimer ? claimers == 0 : puts.load(std::memory_order_acquire) != seen)
        return false;
      sleepers.push_back(&word);
    }
    without_gil([&] { word.wait(0, std::memory_order_acquire); });
    std::lock_guard<std::mutex> lock(mutex);  // the waker is done with `word`
    if (word.load(std::memory_order_relaxed) == woken_one) --waking;
    return true;
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

  // A thread of this queue starts (true) or ends (false) a claim's wait.
  void count_claimer(bool starts) noexcept {
    std::lock_guard<std::mutex> lock(mutex);
    starts ? ++claimers : --claimers;
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
    signal->waking = signal->claimers = signal->put_watchers = 0;
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
      signal->sleep(puts, false);
      continue;
    }
    bool claimed = table.claim(false);  // a kept or free permit, without a wait
    if (!claimed && !signal->shutting_down.load(std::memory_order_acquire)) {
      // Another of this queue's threads waits to claim: it wakes the next if tasks remain once it
      // has its permit (a get_nowait() must answer, so it claims alongside).
      if (blocking && signal->sleep(puts, true)) continue;
      // Wait for a permit only while nothing was put since `puts` was read: a shutdown marker put
      // meanwhile (whose recheck_claims() may have come before this claim queued) is seen.
      signal->count_claimer(true);
      claimed = without_gil([&] { return table.claim(true, &signal->puts, puts); });
      signal->count_claimer(false);
      if (!claimed && !signal->shutting_down.load(std::memory_order_acquire))
        continue;  // the put count moved: look again
    }
    // Claimed, or the queue is shutting down: a claim ended by recheck_claims() holds no permit,
    // and the thread takes what comes first, as the stdlib's loop would (the marker at the
    // latest; a task then waits for its permit in its acquire).
    PyObject* item = take_queued(self);
    if (item != nullptr && claimed) {
      const int rest_empty = queue_empty(self);
      if (rest_empty < 0) {
        Py_DECREF(item);
        return nullptr;
      }
      if (!rest_empty) signal->wake_newest_if_wanted();  // tasks remain: the next claimer
    }
    if (item != nullptr || PyErr_Occurred()) return item;
    // another thread took it meanwhile: look again
  }
}

// Whether this call is the claiming kind, not inside a task: a blocking get() is only ever a pool
// thread's (the stdlib's loops drain with get_nowait or get(block=False)), so it claims from the
// thread's first task on; a get_nowait() claims only on a pool thread that ran a task before (it is
// also shutdown(cancel_futures=True)'s drain from the caller's thread, which must never wait for a
// permit; on 3.13+ a worker's first task comes through it, and is taken the plain way).
bool claims_here(bool blocking_get) {
  const permit_table& table = permit_table::process();
  return (blocking_get || table.served_this_thread()) && !table.held_by_this_thread();
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
    if (plain_blocking_get && claims_here(true)) return take_with_claim(self, true);
    return forward(base_get, self, args, nargs, kwnames);
  });
}

// get_nowait()
PyObject* work_queue_get_nowait(PyObject* self, PyObject* const* args, Py_ssize_t nargsf,
                                PyObject* kwnames) {
  const Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
  return python_errors([&] {
    if (nargs == 0 && kwnames == nullptr && claims_here(false)) return take_with_claim(self, false);
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
  bool marker = nargs >= 1 && args[0] == Py_None;
  for (Py_ssize_t i = 0; nargs == 0 && kwnames != nullptr && i < PyTuple_GET_SIZE(kwnames); ++i)
    if (PyUnicode_CompareWithASCIIString(PyTuple_GET_ITEM(kwnames, i), "item") == 0)
      marker = args[i] == Py_None;
  // Before the count: a claimer that sees the count moved sees this.
  if (marker) signal->shutting_down.store(true, std::memory_order_release);
  signal->puts.fetch_add(1, std::memory_order_release);
  if (marker) {
    // The shutdown marker: every thread looks (each takes its own marker in turn, as the stdlib's
    // loop puts it back for the next), those waiting for a permit too.
    signal->wake_all();
    permit_table::process().recheck_claims(&signal->puts);  // this queue's claims only
    pool_shut_down(self);  // this pool's: a lone task next gets its inner threads at once
  } else {
    signal->wake_newest_if_wanted();  // else the thread on its way, or the claimer once it has its
                                      // permit
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
        "Puts the claiming get, get_nowait and put on a queue.SimpleQueue subclass.");
}

}  // namespace corral::bindings
