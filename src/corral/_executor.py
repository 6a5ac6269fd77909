"""corral.ThreadPoolExecutor: concurrent.futures.ThreadPoolExecutor under the CPU budget.

It is the stdlib's executor, threads and all: at most `max_workers` threads, started as the stdlib
starts them, `initializer` once per thread, the stdlib's thread names and `_threads`, shutdown, exit
and fork behaviour. What corral adds is inside each task: the task runs while its thread holds one of
the process's permits (about budget-many threads run at once across every corral pool), with
BLAS/OpenMP thread limits set for it (docs/native.md, "Inner thread counts"), and gives the permit back while it
waits (sleep, sockets, select, Condition/Event/Queue/future waits, corral.blocking(), or any system
call the permit monitor finds it asleep in). A waiting task never runs another task on its stack.

Futures are the stdlib's concurrent.futures.Future; `corral.Future` is that class.
"""

from __future__ import annotations

import concurrent.futures

from . import _core, _permits, _pool_settings, _work_queue

Future = concurrent.futures.Future


class ThreadPoolExecutor(concurrent.futures.ThreadPoolExecutor):
    """concurrent.futures.ThreadPoolExecutor(max_workers=None, thread_name_prefix='', initializer=None,
    initargs=()) whose tasks run under the process's CPU budget.

    Same arguments, defaults, errors (ValueError for max_workers <= 0, TypeError for a non-callable
    initializer, RuntimeError for a submit after shutdown, BrokenThreadPool when an initializer
    fails) and behaviour as the stdlib class, which it subclasses: submit, map (3.14: buffersize=),
    shutdown, the context manager. max_workers defaults to the stdlib's min(32, os.cpu_count() + 4)
    (os.process_cpu_count() on 3.13+), not the budget: it bounds tasks in flight, and the budget bounds
    how many of them run. Each task holds a permit while it runs (not while it waits) and gets inner
    BLAS/OpenMP threads per the pool settings; submit returns a concurrent.futures.Future.
    """

    def __init__(self, max_workers=None, thread_name_prefix="", initializer=None, initargs=(), **kwargs):
        super().__init__(max_workers, thread_name_prefix, initializer, initargs, **kwargs)
        self._work_queue = _work_queue.WorkQueue()  # no thread has started yet: they start with submit()
        # The stdlib counts idle threads with a threading.Semaphore(0), a Python Condition taken twice
        # per task; the same counter in C++ (acquire(timeout=0) and release(), all the stdlib calls).
        # Its release() also gives back the permit a worker keeps when no work is queued.
        self._idle_semaphore = _core.IdleCount(self._work_queue)
        self._corral_inner = _permits.spec(_pool_settings.inner_threads(self._max_workers), self._max_workers,
                                           True, self._work_queue)
        _permits.start()

    def submit(self, fn, /, *args, **kwargs):
        return super().submit(_permits.run, self._corral_inner, fn, *args, **kwargs)

    submit.__doc__ = concurrent.futures.ThreadPoolExecutor.submit.__doc__
