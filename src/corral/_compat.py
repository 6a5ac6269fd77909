"""Every stdlib internal corral reaches, in one place: what it is, which Pythons have it, what corral does with it.

corral's pools *are* the stdlib's classes with a few steps added (docs/architecture.md, invariant 8), so
corral depends on a handful of names the stdlib does not document. They are gathered here so that a new
Python version is checked in one file. Tested on CPython 3.11, 3.13 and 3.14 (`make test-pythons`); every
item below exists, with the meaning given, on all three.

Other modules import the module-level names and the helpers below from here instead of reaching into the
stdlib themselves. What cannot move here (a subclass overriding or reading its stdlib base's private
members) is listed at the end, with the file that does it. Elsewhere, for start-up's sake (this module
imports multiprocessing, which a program that never makes a pool should not pay for; docs/architecture.md,
"Start-up"): the two that run the program as `__main__` (runpy's and linecache's) are in _compat_main.py;
the C modules `_signal` (corral-children.pth, _children.py) and `_queue` (bindings/bind_work_queue.cpp)
stand for signal.py and queue.py, which import enum and threading.

Python 3.14 changed around these, without breaking any of them:
- ThreadPoolExecutor's worker internals (`_worker(executor_ref, ctx, work_queue)`, `_WorkItem` with a
  per-worker context, for InterpreterPoolExecutor): corral overrides only the public `submit`, so its
  tasks go through whatever worker loop the running Python has.
- `Executor.map(..., buffersize=)`: map calls `self.submit`, so every mapped task is permitted.
- `ProcessPoolExecutor.terminate_workers()` / `kill_workers()`: they walk the executor's `_processes`
  mapping, which corral's ProcessPoolExecutor replaces with a dict subclass (see below): still a dict.
- forkserver is the default start method on Linux: corral's process pools take whatever
  `multiprocessing.get_context()` gives (worker_share's ShareContext supports fork, spawn, forkserver).
"""

from __future__ import annotations

import contextlib
import multiprocessing.connection
import multiprocessing.pool
import threading

# --- module-level names --------------------------------------------------------------------------

# threading._allocate_lock: the lock factory threading.Condition.wait uses for its waiter locks
# (_thread.allocate_lock; 3.11-3.14). _wait_hooks' copy of Condition.wait (which gives the permit back
# while it waits) allocates its waiter the same way.
allocate_lock = threading._allocate_lock

# threading._active: {ident: Thread} of the threads threading knows, started and not ended (3.11-3.14;
# what enumerate() lists, less those starting). The report's probe reads it, from a thread that is not
# among them, to name the program's threads; list(...values()) copies it in one step.
threads_by_ident = threading._active

# threading._register_atexit(fn): fn runs in threading._shutdown, after the main thread ends and before
# finalization and atexit handlers, newest first (3.9-3.14; concurrent.futures.thread registers its own
# exit there). The report's probe stops there, so that it is never inside a C++ call when the
# interpreter finalizes.
register_threading_atexit = threading._register_atexit

# multiprocessing.pool.worker: the process pool's worker loop (no underscore, but undocumented; the
# target Pool._repopulate_pool_static gives every worker Process; 3.11-3.14). corral.Pool's Process
# recognises it and wraps it (_process_pool._tracked_worker) to mark the tasks a worker holds.
pool_worker = multiprocessing.pool.worker

# multiprocessing.pool.INIT / RUN / CLOSE / TERMINATE: the values of Pool._state and of the pool's
# handler threads' _state (3.8-3.14). corral.Pool reads them to tell a worker that died from one that
# close()/terminate() sent home.
POOL_INIT = multiprocessing.pool.INIT
POOL_RUN = multiprocessing.pool.RUN
POOL_TERMINATE = multiprocessing.pool.TERMINATE

# Relied on, not reached: the stdlib's own exit handling of the classes corral subclasses, such as
# threading._register_atexit(concurrent.futures.thread._python_exit) and concurrent.futures.thread._shutdown
# (3.9-3.14). corral's thread pools keep them by being the stdlib's classes; corral calls neither.
#
# concurrent.futures.__getattr__ (3.7-3.14): the package resolves ThreadPoolExecutor and
# ProcessPoolExecutor (3.14: InterpreterPoolExecutor too) lazily. _patch sets the attributes on the
# package, which shadows that resolution until the patch ends and deletes them again.


# --- multiprocessing.Process internals ------------------------------------------------------------

def process_start_method(process) -> str:
    """process._start_method: "fork", "spawn" or "forkserver", a class attribute of the context's Process
    classes (multiprocessing.context.ForkProcess ...; 3.4-3.14). _worker_share starts a spawn worker with
    its share's environment (a fresh interpreter reads it at exec); the others set it in the child."""
    return process._start_method


def process_returncode(process) -> int | None:
    """process._popen.returncode: the exit status once the process was reaped, None before (or before it
    started: _popen is None until start(); 3.3-3.14). Unlike Process.exitcode it never waits or reaps."""
    popen = process._popen
    return None if popen is None else popen.returncode


def process_has_exited(process) -> bool:
    """Whether a started process has exited, without reaping it (other threads may be waiting on it):
    Process._closed (after close(); 3.7-3.14), then _popen.returncode, then whether _popen.sentinel (a fd
    that becomes readable when the process exits; 3.3-3.14) is ready. A process being started right now
    (no _popen yet) has not. _worker_share's share table uses it to hand an exited worker's share to its
    replacement."""
    if getattr(process, "_closed", False):
        return True
    popen = getattr(process, "_popen", None)
    if popen is None:
        return False
    if popen.returncode is not None:
        return True
    try:
        return bool(multiprocessing.connection.wait([popen.sentinel], timeout=0))
    except (OSError, ValueError):
        return True


# --- multiprocessing.pool result internals --------------------------------------------------------

def fail_pending_result(cache, job, result, error: BaseException) -> None:
    """Ends a pending ApplyResult / MapResult / IMapIterator of a process pool with `error`, as the pool's
    result handler would end it with a task's exception, and removes it from the pool's `cache`
    (Pool._cache, job id -> result). Internals written (3.8-3.14):
      IMapIterator: _cond (Condition), _items (deque of (success, value)), _index, _length;
      ApplyResult (MapResult is one): _success, _value, _event (Event), _error_callback, _pool.
    corral.Pool calls it for every pending result when a worker dies, so that nothing waits for ever
    (invariant 6); the stdlib's pool would wait."""
    if isinstance(result, multiprocessing.pool.IMapIterator):
        with result._cond:
            result._items.append((False, error))
            result._index += 1
            result._length = result._index  # the consumer gets the error, then StopIteration
            result._cond.notify()
    else:
        if result.ready():
            return
        result._success = False
        result._value = error
        callback = getattr(result, "_error_callback", None)
        if callback is not None:
            with contextlib.suppress(Exception):  # a callback that raises must not stop the others
                callback(error)
        result._event.set()
    with contextlib.suppress(KeyError):
        del cache[job]
    result._pool = None


# --- what stays in the classes (subclass overrides and reads of their bases' private members) -----
#
# _thread_pool.ThreadPool (multiprocessing.pool.ThreadPool):
#   overrides Pool._guarded_task_generation(result_job, func, iterable) (3.8-3.14), the one method map,
#   starmap, imap, imap_unordered and their *_async forms hand every task to; reads self._processes
#   (the pool's size) and hands self._inqueue and self._taskqueue (queue.SimpleQueue, 3.8-3.14) to the
#   dynamic rule, which calls their qsize().
# _executor.ThreadPoolExecutor (concurrent.futures.ThreadPoolExecutor):
#   reads self._max_workers (3.2-3.14) for the static inner-thread rule; replaces self._idle_semaphore
#   (a threading.Semaphore, 3.8-3.14; the stdlib calls acquire(timeout=0) and release()) with a C++
#   counter; hands self._work_queue (queue.SimpleQueue, 3.7-3.14) to the dynamic rule, which calls
#   its qsize().
# _process_pool.Pool (multiprocessing.pool.Pool):
#   sets self._state / self._pool before the stdlib's __init__ (Pool.__del__ reads them if planning
#   fails); reads self._state, self._cache, self._maxtasksperchild, self._worker_handler._state;
#   overrides the staticmethod Pool.Process(ctx, *args, **kwds) (3.8-3.14; read as self.Process, which
#   a descriptor answers) and Pool._check_running() (3.8-3.14).
# _thread_pool.ThreadPool: reads self._processes, self._inqueue and self._taskqueue after the stdlib's
#   Pool.__init__ (3.8-3.14).
# _process_executor.ProcessPoolExecutor (concurrent.futures.ProcessPoolExecutor):
#   replaces self._processes (pid -> Process, 3.2-3.14; 3.14's terminate_workers/kill_workers walk it)
#   with a dict subclass whose pop() frees the retiring worker's share.
# _worker_share's Process classes (multiprocessing.context.ForkProcess / SpawnProcess / ForkServerProcess,
#   undocumented classes of an undocumented module, 3.4-3.14): override start(), run(), join().
# _wait_hooks' Condition.wait: a copy of threading.Condition.wait (3.11-3.14) using its private members
#   _is_owned(), _waiters, _release_save(), _acquire_restore(state).
#
# Not stdlib, but private all the same: joblib._parallel_backends.ParallelBackendBase._prepare_worker_env
# (joblib >= 1.3), which _joblib wraps to give joblib's workers corral's thread limits.
